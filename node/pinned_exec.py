"""The node's ClientApp launcher: Flower's SuperExec, launching only the project's own app.

`python -m node.pinned_exec` runs beside a SuperNode started with `--isolation process`, in
place of the SuperExec the SuperNode would start itself, which launches whatever bundle a run
names (a bundle can carry Python modules, imported as its ClientApp: code run on the node).
This one takes ClientApp tasks only, launches a task only if its bundle's sha256 is the one the
node computed itself from `protos.training_app`, and runs it as `slm-clientapp`
(`node.checked_clientapp`), which installs the bundle only if its bytes hash to the same.
"""

from __future__ import annotations

from protos import training_app
from slm import processes


def main() -> None:
    training_app.run_pinned_superexec("CLIENT_APP", processes.tool("slm-clientapp"))


if __name__ == "__main__":
    main()
