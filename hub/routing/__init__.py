"""The routing plane: nodes join (admission, join tokens, their live connections), clients ask
(the router over candidates, signed scores and the posterior), all over gRPC."""
