# The comparison table of benches/peers/run.sh.
#   stdin:     "<scenario>\t<title>" lines, in display order
#   -v peers:  "tollgate haproxy nginx varnish" (any subset, in column order)
#   -v raw:    run.sh's raw.tsv (round, scenario, peer, req/s, p99 as wrk prints it, requests,
#              server CPU ticks, server CPU µs per request, client CPU µs per request)
# Cells are medians over the rounds; ratios are Tollgate's median req/s over the peer's; the
# "CPU µs/req" columns are the server's median CPU time per request, `cpu T/best` Tollgate's
# over the lowest peer's (lower is better), `T client` the client's CPU time per request in
# Tollgate's row. The issue 7 targets are evaluated at the end, on the
# plaintext rows (scenario ids without a "tls-"/"h2-" prefix), then the issue 20 targets on the
# TLS and HTTP/2 rows (a row not run reads "not measured").

function us(v) {               # wrk's "812.00us" / "1.23ms" / "1.10s" / "2.00m" in microseconds
  if (v ~ /us$/) return v + 0
  if (v ~ /ms$/) return v * 1000
  if (v ~ /m$/) return v * 60e6
  if (v ~ /s$/) return v * 1e6
  return v + 0
}
function median(list,    a, n, i, j, t) {
  n = split(list, a, " ")
  for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function lat(u) { return u < 1000 ? sprintf("%.0fus", u) : sprintf("%.2fms", u / 1000) }
function ratio(a, b) { return (a == "" || b == "" || b == 0) ? "-" : sprintf("%.2fx", a / b) }
# note (optional): printed after a verdict, e.g. the same ratio by server CPU
function target(text, ok, note) { printf "  %-70s %s%s\n", text, ok == "" ? "not measured" : (ok ? "met" : "NOT met"), ok == "" ? "" : note }

BEGIN {
  FS = "\t"
  np = split(peers, P, " ")
  while ((getline line < raw) > 0) {
    split(line, f, "\t")
    if (f[1] == "round") continue
    RPS[f[2], f[3]] = RPS[f[2], f[3]] " " f[4] + 0
    LAT[f[2], f[3]] = LAT[f[2], f[3]] " " us(f[5])
    if (f[8] != "") CPU[f[2], f[3]] = CPU[f[2], f[3]] " " f[8] + 0
    if (f[9] != "") CLI[f[2], f[3]] = CLI[f[2], f[3]] " " f[9] + 0
  }
  has_t = peers ~ /(^| )tollgate( |$)/
  printf "\n%-50s", "scenario"
  for (i = 1; i <= np; i++) printf " %20s", P[i]
  if (has_t) {
    for (i = 1; i <= np; i++) if (P[i] != "tollgate") printf " %9s", "T/" P[i]
    printf " %9s %11s", "T/best", "p99 T/best"
  }
  printf "   CPU µs/req:"
  for (i = 1; i <= np; i++) printf " %9s", P[i]
  if (has_t) printf " %11s %9s", "cpu T/best", "T client"
  printf "\n"
}
{
  s = $1; ns++; S[ns] = s
  printf "%-50s", $2
  best = ""; bestlat = ""
  for (i = 1; i <= np; i++) {
    p = P[i]
    if ((s, p) in RPS) {
      M[s, p] = median(RPS[s, p]); L[s, p] = median(LAT[s, p])
      printf " %20s", sprintf("%.0f (%s)", M[s, p], lat(L[s, p]))
      if (p != "tollgate" && (best == "" || M[s, p] > best)) best = M[s, p]
      if (p != "tollgate" && (bestlat == "" || L[s, p] < bestlat)) bestlat = L[s, p]
    } else printf " %20s", "-"
  }
  BEST[s] = best; BESTLAT[s] = bestlat
  if (has_t) {
    t = ((s, "tollgate") in M) ? M[s, "tollgate"] : ""
    for (i = 1; i <= np; i++) if (P[i] != "tollgate") printf " %9s", ratio(t, ((s, P[i]) in M) ? M[s, P[i]] : "")
    printf " %9s %11s", ratio(t, best), ratio(((s, "tollgate") in L) ? L[s, "tollgate"] : "", bestlat)
  }
  printf "   %12s", ""
  bestcpu = ""
  for (i = 1; i <= np; i++) {
    p = P[i]
    if ((s, p) in CPU) {
      C[s, p] = median(CPU[s, p])
      printf " %9s", sprintf("%.1f", C[s, p])
      if (p != "tollgate" && (bestcpu == "" || C[s, p] < bestcpu)) bestcpu = C[s, p]
    } else printf " %9s", "-"
  }
  if (has_t) {
    printf " %11s", ratio(((s, "tollgate") in C) ? C[s, "tollgate"] : "", bestcpu)
    if ((s, "tollgate") in CLI) K[s] = median(CLI[s, "tollgate"])
    printf " %9s", (s in K) ? sprintf("%.1f", K[s]) : "-"
  }
  printf "\n"
}
function r(s, p) { return ((s, "tollgate") in M && (s, p) in M) ? M[s, "tollgate"] / M[s, p] : "" }
function ge(x, y) { return x == "" ? "" : x >= y }
END {
  if (!has_t) exit
  print "\nissue 7 targets:"
  target("1. public hit >= 1.0x the fastest peer", ge(BEST["pub1k"] == "" ? "" : M["pub1k", "tollgate"] / BEST["pub1k"], 1.0))
  target("1. public hit >= 1.3x nginx", ge(r("pub1k", "nginx"), 1.3))
  target("2. one ES256 token >= 4x HAProxy", ge(r("sub1", "haproxy"), 4))
  target("2. one ES256 token >= 0.9x Tollgate's own public hit",
         ge(((("sub1", "tollgate") in M) && (("pub1k", "tollgate") in M)) ? M["sub1", "tollgate"] / M["pub1k", "tollgate"] : "", 0.9))
  target("3. 10,000 rotating ES256 tokens >= 4x HAProxy", ge(r("rot10k", "haproxy"), 4))
  target("4. never-seen ES256 token per request >= 1.0x HAProxy", ge(r("fresh", "haproxy"), 1.0))
  target("5. 100 KiB object hit >= 1.0x nginx", ge(r("pub100k", "nginx"), 1.0))
  ok = ""
  for (k = 1; k <= ns; k++) {
    s = S[k]
    if (s ~ /^(tls|h2)-/ || !((s, "tollgate") in L) || BESTLAT[s] == "") continue
    ok = (ok == "" ? 1 : ok) && L[s, "tollgate"] <= BESTLAT[s]
  }
  target("6. p99 in every plaintext row no worse than the best peer's", ok)
  issue20()
}
# Tollgate's req/s in row a over its req/s in row b, and the same by server CPU time per request
# (b's over a's): on rows where the client's core saturates first, req/s measures the client.
function own(a, b) { return ((a, "tollgate") in M && (b, "tollgate") in M) ? M[a, "tollgate"] / M[b, "tollgate"] : "" }
function owncpu(a, b) {
  return ((a, "tollgate") in C && (b, "tollgate") in C && C[a, "tollgate"] > 0) ? sprintf("  (by server CPU: %.2fx%s)", C[b, "tollgate"] / C[a, "tollgate"], busy(a, b)) : ""
}
# "; busy: server x%/y%, client z%/w%": the share of its core each side used in rows a and b
# (CPU µs per request x req/s, from the medians); the side near 100% set the row's req/s.
function busy(a, b) {
  if (!(a in K && b in K)) return ""
  return sprintf("; busy: server %.0f%%/%.0f%%, client %.0f%%/%.0f%%", C[a, "tollgate"] * M[a, "tollgate"] / 1e4,
                 C[b, "tollgate"] * M[b, "tollgate"] / 1e4, K[a] * M[a, "tollgate"] / 1e4, K[b] * M[b, "tollgate"] / 1e4)
}
# Target "Tollgate's row a >= 0.9x its row b", judged by req/s, with the server-CPU ratio noted.
function near(text, a, b) { target(text, ge(own(a, b), 0.9), owncpu(a, b)) }
# The issue 20 targets, on the TLS (wrk over https) and HTTP/2 (h2load) rows.
function issue20(    k, pr, name, s, title) {
  print "\nissue 20 targets (TLS: HTTP/1.1 over TLS 1.3; HTTP/2: h2load, 50 clients x 10 streams):"
  target("TLS public hit >= 1.3x HAProxy", ge(r("tls-pub1k", "haproxy"), 1.3))
  for (k = 1; k <= ns; k++) {
    s = S[k]
    if (s !~ /^h2-/) continue
    if ((s, "haproxy") in M) target("HTTP/2 " substr(s, 4) " >= 1.0x HAProxy", ge(r(s, "haproxy"), 1.0))
    if ((s, "nginx") in M) target("HTTP/2 " substr(s, 4) " >= 1.5x nginx", ge(r(s, "nginx"), 1.5))
  }
  split("tls- h2-", pr, " ")
  title["sub1"] = "one ES256 token"; title["rot10k"] = "10,000 rotating tokens"
  title["media"] = "media (token route)"; title["signed"] = "signed URL"
  for (k = 1; k <= 2; k++) {
    name = k == 1 ? "TLS" : "HTTP/2"
    near(name " " title["sub1"] " >= 0.9x " name " public hit", pr[k] "sub1", pr[k] "pub1k")
    # HTTP/2 only: the same token in a cookie, which h2load's HPACK encoder indexes (run.sh)
    if (k == 2) near(name " " title["sub1"] " in a cookie >= 0.9x " name " public hit", "h2-cookie", "h2-pub1k")
    near(name " " title["rot10k"] " >= 0.9x " name " public hit", pr[k] "rot10k", pr[k] "pub1k")
    target(name " " title["sub1"] " >= 4x HAProxy", ge(r(pr[k] "sub1", "haproxy"), 4))
    if (k == 2) target(name " " title["sub1"] " in a cookie >= 4x HAProxy", ge(r("h2-cookie", "haproxy"), 4))
    target(name " " title["rot10k"] " >= 4x HAProxy", ge(r(pr[k] "rot10k", "haproxy"), 4))
    near(name " " title["media"] " >= 0.9x the subscriber hit", pr[k] "media", pr[k] "sub1")
    near(name " " title["signed"] " >= 0.9x the subscriber hit", pr[k] "signed", pr[k] "sub1")
  }
}
