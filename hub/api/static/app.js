// The hub's pages: one file, no framework. Every value that came from the network goes into
// the document as text (textContent), never as markup: a node names its own domain and model.
"use strict";
(function () {
  const KEY = "swarm-api-key"; // sessionStorage: kept for this tab, never put in a URL
  const $ = (id) => document.getElementById(id);
  let pollMs = 1000;
  let timer = null;
  let generation = 0; // each route() starts one poll loop; older loops stop
  let charts = {};
  let domains = [];

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "class") node.className = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node[k] = v;
    }
    for (const c of children) node.append(c instanceof Node ? c : String(c ?? ""));
    return node;
  }
  const short = (id) => (id || "").slice(0, 12);
  const credits = (n) => (n == null ? "–" : Number(n).toFixed(6).replace(/\.?0+$/, ""));
  const num = (n, d = 3) => (n == null || !isFinite(n) ? "–" : Number(n).toFixed(d));
  function ago(iso) {
    if (!iso) return "never";
    const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (s < 90) return `${Math.round(s)} s ago`;
    if (s < 5400) return `${Math.round(s / 60)} min ago`;
    if (s < 129600) return `${Math.round(s / 3600)} h ago`;
    return new Date(iso).toLocaleString();
  }
  function show(box, message) {
    box.textContent = message || "";
    box.hidden = !message;
  }
  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  // --- the key and the calls ----------------------------------------------------------------
  const key = () => sessionStorage.getItem(KEY) || "";

  class ApiError extends Error {
    constructor(status, message) { super(message); this.status = status; }
  }

  async function call(path, init = {}) {
    const headers = { ...(init.headers || {}), authorization: `Bearer ${key()}` };
    let response;
    try {
      response = await fetch(path, { ...init, headers, cache: "no-store" });
    } catch (err) {
      if (err.name === "AbortError") throw err; // the user pressed Stop
      throw new ApiError(0, `the hub cannot be reached (${err.message})`);
    }
    if (!response.ok) throw await apiError(response);
    return response;
  }

  async function apiError(response) {
    let message = `the hub answered ${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) message = body.error.message;
    } catch (_) { /* not JSON: keep the status line */ }
    return new ApiError(response.status, message);
  }

  const getJson = async (path) => (await call(path)).json();

  async function useKey(candidate) {
    sessionStorage.setItem(KEY, candidate);
    try {
      const me = await getJson("/api/v1/me");
      pollMs = Math.min(2000, me.poll_ms || 1000);
      show($("key-error"), "");
      $("whoami").textContent = `key ${me.name}${me.admin ? " (admin)" : ""} · ${credits(me.balance)} credits`;
      $("key-forget").hidden = false;
      $("key-input").value = "";
      $("need-key").hidden = true;
      await loadModels();
      route();
    } catch (err) {
      if (err.status !== 401 && err.status !== 403) { // the hub is away: keep the key
        show($("key-error"), `Could not check the key: ${err.message}`);
        return;
      }
      sessionStorage.removeItem(KEY);
      $("whoami").textContent = "";
      $("key-forget").hidden = true;
      show($("key-error"), `The hub refused this key: ${err.message}`);
      $("need-key").hidden = false;
      hidePages();
    }
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY);
    $("whoami").textContent = "";
    $("key-forget").hidden = true;
    $("need-key").hidden = false;
    hidePages();
  }

  async function loadModels() {
    const list = await getJson("/v1/models");
    const select = $("model");
    const chosen = select.value;
    select.replaceChildren(...list.data.map((m) => el("option", { value: m.id }, m.id)));
    if ([...select.options].some((o) => o.value === chosen)) select.value = chosen;
    domains = list.data.map((m) => m.id).filter((id) => id !== "swarm/auto").map((id) => id.slice(6));
  }

  // --- pages ----------------------------------------------------------------------------------
  const pages = { chat: null, nodes: refreshNodes, rewards: refreshRewards, training: refreshTraining };

  function hidePages() {
    document.querySelectorAll(".page").forEach((p) => (p.hidden = true));
    clearTimeout(timer);
  }

  function route() {
    const name = (location.hash || "#chat").slice(1);
    const page = name in pages ? name : "chat";
    document.querySelectorAll("nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
    if (!key()) { hidePages(); $("need-key").hidden = false; return; }
    document.querySelectorAll(".page").forEach((p) => (p.hidden = p.id !== `page-${page}`));
    clearTimeout(timer);
    generation += 1;
    if (pages[page]) poll(page, generation);
  }

  async function poll(page, mine) {
    try {
      await pages[page]();
    } finally { // a newer route() started its own loop: this one ends
      if (mine === generation && (location.hash || "#chat").slice(1) === page && key()) {
        timer = setTimeout(() => poll(page, mine), pollMs);
      }
    }
  }

  function chart(id, series, data, opts = {}) {
    const box = $(id);
    const width = Math.max(200, box.clientWidth || box.parentElement.clientWidth - 24);
    if (!data[0].length) {
      if (charts[id]) { charts[id].destroy(); delete charts[id]; }
      box.replaceChildren(el("div", { class: "empty" }, opts.empty || "nothing yet"));
      return;
    }
    // The x window: the span asked for (`opts.span` seconds up to now), else the data's own,
    // widened around a lone point (uPlot would otherwise spread one point over years).
    const xs = data[0];
    let [lo, hi] = [Math.min(...xs), Math.max(...xs)];
    if (opts.span) [lo, hi] = [Date.now() / 1000 - opts.span, Date.now() / 1000];
    else if (lo === hi) [lo, hi] = [lo - (opts.time === false ? 1 : 1800), hi + (opts.time === false ? 1 : 1800)];
    const old = charts[id];
    if (old && old.series.length === series.length + 1 && Math.abs(old.width - width) < 2) {
      old.bounds = [lo, hi];
      old.setData(data);
      return;
    }
    if (old) old.destroy();
    box.replaceChildren();
    const colors = ["#2f5f8f", "#c05621", "#2e7d32", "#8e24aa"];
    const made = new uPlot({
      width, height: 200,
      scales: { x: { time: opts.time !== false, range: () => made.bounds } },
      axes: [opts.time === false ? { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500] } : {}, { size: 60 }],
      series: [{ label: opts.x || "time" }, ...series.map((s, i) => ({ stroke: colors[i % 4], width: 2, points: { size: 6 }, ...s }))],
    }, data, box);
    made.bounds = [lo, hi];
    made.setData(data);
    charts[id] = made;
  }

  // --- chat ----------------------------------------------------------------------------------
  let asking = null;

  function settingValue(id) {
    const raw = $(id).value.trim();
    if (raw === "") return undefined;
    const n = Number(raw);
    return Number.isFinite(n) ? n : raw; // not a number: the API says what is wrong with it
  }

  async function send(event) {
    event.preventDefault();
    if (asking) return;
    show($("chat-error"), "");
    $("answer").textContent = "";
    $("stats").textContent = "";
    $("route").hidden = true;
    $("switches").replaceChildren();
    const body = {
      model: $("model").value,
      messages: [{ role: "user", content: $("prompt").value }],
      stream: true,
      stream_options: { include_usage: true },
    };
    for (const name of ["max_tokens", "temperature", "top_p", "seed"]) {
      const v = settingValue(name);
      if (v !== undefined) body[name] = v;
    }
    if ($("mode").value) body.swarm = { mode: $("mode").value };
    asking = new AbortController();
    $("send").disabled = true;
    $("stop").disabled = false;
    const started = performance.now();
    const stats = { first: 0, pieces: 0, tokens: 0, started };
    try {
      const response = await call("/v1/chat/completions", {
        method: "POST", signal: asking.signal,
        headers: { "content-type": "application/json" }, body: JSON.stringify(body),
      });
      await readStream(response, stats);
    } catch (err) {
      if (err.name !== "AbortError") show($("chat-error"), err.message);
    } finally {
      asking = null;
      $("send").disabled = false;
      $("stop").disabled = true;
    }
  }

  async function readStream(response, stats) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data: ")) continue;
          const data = line.slice(6);
          if (data === "[DONE]") return;
          onChunk(JSON.parse(data), stats);
        }
      }
    }
  }

  function onChunk(chunk, stats) {
    if (chunk.error) { show($("chat-error"), chunk.error.message); return; }
    if (chunk.swarm) showRoute(chunk.swarm);
    if (chunk.usage) stats.tokens = chunk.usage.completion_tokens;
    const choice = (chunk.choices || [])[0];
    const text = choice && choice.delta && choice.delta.content;
    if (text) {
      if (!stats.first) stats.first = performance.now();
      stats.pieces += 1;
      $("answer").append(text);
    }
    const seconds = (performance.now() - (stats.first || stats.started)) / 1000;
    const tokens = stats.tokens || stats.pieces;
    const rate = seconds > 0 && tokens > 1 ? ((tokens - 1) / seconds).toFixed(1) : "–";
    const ttft = stats.first ? `${Math.round(stats.first - stats.started)} ms to first token · ` : "";
    if (chunk.swarm && chunk.swarm.charged_credits != null) {
      stats.charge = ` · charged ${credits(chunk.swarm.charged_credits)} credits`
        + (chunk.swarm.verified ? ", signature verified" : ", signature NOT verified");
    }
    $("stats").textContent = `${tokens} tokens · ${ttft}${rate} tokens/s${stats.charge || ""}`;
  }

  function showRoute(swarm) {
    $("route").hidden = false;
    $("route-domain").textContent = swarm.domain;
    $("route-node").textContent = swarm.node_id;
    $("route-posterior").textContent = num(swarm.posterior, 4);
    $("route-mode").textContent = swarm.mode || "direct";
    const draft = swarm.draft;
    for (const id of ["route-drafter-label", "route-drafter", "draft-box"]) $(id).hidden = !draft;
    if (draft) {
      const by = /^[0-9a-f]{32}$/.test(draft.by) ? short(draft.by) : draft.by; // a node, or not
      $("route-drafter").textContent = `${by} (${draft.tokens} tokens)`;
      $("draft").textContent = draft.text;
    }
    fill($("candidates").tBodies[0], (swarm.candidates || []).map((c) => el("tr",
      { class: c.node_id === swarm.node_id ? "ok" : "" },
      el("td", {}, c.domain), el("td", { class: "mono" }, short(c.node_id)),
      el("td", {}, c.declined ? "declined" : num(c.loglik, 2)), el("td", {}, num(c.posterior, 4)))));
    $("switches").replaceChildren(...(swarm.switches || []).map((s) => el("div", { class: "bad" },
      `fail-over: ${short(s.from_node)} → ${short(s.to_node)} (${s.reason})`)));
  }

  // --- nodes ---------------------------------------------------------------------------------
  async function refreshNodes() {
    try {
      const [view, traffic] = await Promise.all([getJson("/api/v1/nodes"), getJson("/api/v1/traffic")]);
      show($("nodes-error"), "");
      $("n-connected").textContent = view.connected;
      $("n-known").textContent = view.known;
      $("n-domains").textContent = view.domains.length;
      $("n-asks").textContent = traffic.series.reduce((a, p) => a + p.asks, 0);
      fill($("nodes").tBodies[0], view.nodes.map((n) => el("tr", { "data-node": n.node_id },
        el("td", { class: "mono", title: n.node_id }, short(n.node_id)),
        el("td", {}, n.domain),
        el("td", { class: `status ${n.status}` }, n.status),
        el("td", { title: n.last_seen }, n.status === "connected" ? "now" : ago(n.last_seen)),
        el("td", { class: "mono", title: n.model_version }, short(n.model_version)),
        el("td", {}, n.status === "connected" ? `${n.in_flight} / ${n.capacity}` : `– / ${n.capacity}`),
        el("td", {}, n.latency_ms == null ? "–" : `${Math.round(n.latency_ms)} ms (${n.asks_last_hour})`),
        el("td", {}, n.reputation == null ? "admin" : num(n.reputation, 2)),
        el("td", { class: n.audits_failed ? "bad" : "" }, `${n.audits_passed} / ${n.audits_failed}`))));
      const s = traffic.series;
      chart("chart-latency", [{ label: "mean ms" }, { label: "worst ms" }],
        [s.map((p) => p.t), s.map((p) => p.latency_ms), s.map((p) => p.worst_ms)], { empty: "no answers in the last hour", span: 3600 });
      chart("chart-throughput", [{ label: "tokens" }, { label: "asks" }],
        [s.map((p) => p.t), s.map((p) => p.tokens), s.map((p) => p.asks)], { empty: "no answers in the last hour", span: 3600 });
    } catch (err) {
      show($("nodes-error"), err.message);
    }
  }

  // --- rewards -------------------------------------------------------------------------------
  let historyNode = "";
  let lastTraining = "";
  const SPANS = { hour: 3600, day: 86400, week: 604800, all: 0 };

  async function refreshRewards() {
    const select = $("reward-domain");
    if (select.options.length - 1 !== domains.length) {
      const chosen = select.value;
      select.replaceChildren(el("option", { value: "" }, "every domain"),
        ...domains.map((d) => el("option", { value: d }, d)));
      select.value = chosen;
    }
    const query = new URLSearchParams({ period: $("period").value, domain: select.value });
    try {
      const [view, chain] = await Promise.all([
        getJson(`/api/v1/rewards?${query}`), getJson("/api/v1/ledger/verification")]);
      show($("rewards-error"), "");
      $("rewards-body").hidden = false;
      $("chain-ok").textContent = chain.ok ? "verified ✓" : "BROKEN ✗";
      $("chain-ok").className = `big ${chain.ok ? "ok" : "bad"}`;
      $("chain-detail").textContent = `${chain.length} entries · head ${short(chain.head)} · walked ${ago(chain.verified_at)}`
        + (chain.problem ? ` · ${chain.problem}` : "");
      $("treasury").textContent = credits(view.treasury);
      fill($("leaderboard").tBodies[0], view.leaderboard.map((r, i) => el("tr",
        { class: "clickable", "data-node": r.node_id, onclick: () => openHistory(r.node_id) },
        el("td", {}, i + 1), el("td", { class: "mono" }, short(r.node_id)),
        el("td", {}, credits(r.earned)), el("td", {}, r.answers))));
      fill($("balances").tBodies[0], view.balances.map((b) => {
        const node = b.account.startsWith("node:") ? b.account.slice(5) : "";
        return el("tr", { class: node ? "clickable" : "", "data-account": b.account,
          onclick: node ? () => openHistory(node) : null },
          el("td", { class: "mono" }, node ? `node:${short(node)}` : b.account),
          el("td", { class: "credits" }, credits(b.credits)));
      }));
      chart("chart-paid", [{ label: "credits" }], [view.paid.map((p) => p.t), view.paid.map((p) => p.credits)],
        { empty: "nothing paid in this period", span: SPANS[$("period").value] });
      if (historyNode) await loadHistory();
    } catch (err) {
      $("rewards-body").hidden = err.status === 403;
      show($("rewards-error"), err.message);
    }
  }

  function openHistory(node) {
    historyNode = node;
    loadHistory().catch((err) => show($("rewards-error"), err.message));
  }

  async function loadHistory() {
    const view = await getJson(`/api/v1/rewards/nodes/${encodeURIComponent(historyNode)}`);
    $("history").hidden = false;
    $("history-node").textContent = `${short(view.node_id)} (${view.domain})`;
    $("history-balance").textContent = `balance ${credits(view.balance)} credits`
      + (view.proofs.length ? ` · ${view.proofs.length} audit proof(s) against it` : "");
    fill($("history-entries").tBodies[0], view.entries.map((e) => el("tr", {},
      el("td", {}, e.seq), el("td", { title: e.at }, ago(e.at)), el("td", {}, e.kind),
      el("td", { class: e.credits < 0 ? "bad" : "" }, credits(e.credits)),
      el("td", { class: "wrap" }, e.reason))));
  }

  // --- training ------------------------------------------------------------------------------
  async function refreshTraining() {
    try {
      const view = await getJson("/api/v1/training");
      show($("training-error"), "");
      const box = $("training-domains");
      const seen = JSON.stringify(view);
      if (seen === lastTraining) return; // unchanged: keep the cards and their charts
      lastTraining = seen;
      if (!view.domains.length) {
        box.replaceChildren(el("p", { class: "muted" },
          "No federated rounds yet. `slm-hub train --domain DOMAIN` runs one."));
      } else {
        box.replaceChildren(...view.domains.map(trainingDomain));
      }
      view.domains.forEach((d, i) => {
        const xs = [], train = [], val = [];
        for (const run of [...d.runs].reverse()) {
          for (const r of run.rounds) { xs.push(xs.length + 1); train.push(r.train_loss); val.push(r.val_loss); }
        }
        delete charts[`chart-loss-${i}`]; // its element was just replaced
        chart(`chart-loss-${i}`, [{ label: "train loss" }, { label: "validation loss" }],
          [xs, train, val], { time: false, x: "round", empty: "no rounds yet" });
      });
    } catch (err) {
      show($("training-error"), err.message);
    }
  }

  function trainingDomain(d, i) {
    return el("div", { class: "card run", "data-domain": d.domain },
      el("h2", {}, `${d.domain}: ${d.runs.length} run(s)`),
      el("div", { class: "label" }, "Loss over rounds, every run in order"),
      el("div", { id: `chart-loss-${i}`, class: "loss-chart" }),
      ...d.runs.map(trainingRun));
  }

  function trainingRun(run) {
    const head = ["Round", "When", "Participants", "Rejected", "Train loss", "Validation loss",
      "Global model"].map((h) => el("th", {}, h));
    const rows = run.rounds.map((r) => el("tr", {},
      el("td", {}, r.round),
      el("td", { title: r.at }, ago(r.at)),
      el("td", { class: "mono wrap" },
        r.participants.map((p) => `${short(p.node)} (${p.examples})`).join(", ")),
      el("td", { class: "wrap" }, r.rejected.length
        ? r.rejected.map((x) => `${short(x.node)}: ${x.reason}`).join("; ") : "none"),
      el("td", {}, num(r.train_loss, 4)),
      el("td", {}, num(r.val_loss, 4)),
      el("td", { class: "mono", title: r.model }, short(r.model))));
    return el("div", { class: "run" },
      el("div", { class: "muted" }, `run ${run.run_id} · ${run.strategy || "strategy not recorded"}`),
      el("div", { class: "scroll" },
        el("table", {}, el("thead", {}, el("tr", {}, ...head)), el("tbody", {}, ...rows))));
  }

  // --- wiring --------------------------------------------------------------------------------
  $("key-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const candidate = $("key-input").value.trim();
    if (!candidate) { show($("key-error"), "Type an API key first (slm-hub key create makes one)."); return; }
    useKey(candidate);
  });
  $("key-forget").addEventListener("click", forgetKey);
  $("chat-form").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) $("chat-form").requestSubmit();
  });
  $("stop").addEventListener("click", () => asking && asking.abort());
  $("period").addEventListener("change", () => refreshRewards());
  $("reward-domain").addEventListener("change", () => refreshRewards());
  window.addEventListener("hashchange", route);
  let resized = null;
  window.addEventListener("resize", () => { // charts are drawn for a width: draw them anew
    clearTimeout(resized);
    resized = setTimeout(() => {
      Object.values(charts).forEach((c) => c.destroy());
      charts = {};
      lastTraining = "";
      route();
    }, 100);
  });
  if (key()) useKey(key()); else route();
})();
