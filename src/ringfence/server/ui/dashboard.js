/* Ringfence dashboard: renders every page from the JSON API and refreshes it every 2 s.
 *
 * The API token a person pasted on /ui/login lives in this tab's sessionStorage and is sent
 * only as "Authorization: Bearer" on fetch calls to this server: no cookie, nothing in a URL.
 * Everything shown is built with DOM calls and textContent, never by parsing HTML, so text from
 * the API (reasons, names, messages) cannot become markup. Buttons follow the caller's role and
 * the rollout's phase; the server decides anyway, and its refusal is shown as it words it.
 */
"use strict";

const TOKEN = "ringfence.token";
const WHO = "ringfence.whoami";
const NOTICE = "ringfence.notice";
const POLL_MS = 2000;
const OPERATE = ["operator", "releaser", "admin"];
const ACTIONS = {
  pause: {label: "Pause", from: ["rolling"], roles: OPERATE,
          help: "No new device joins; devices that took the version keep it."},
  resume: {label: "Resume", from: ["paused", "halted"], roles: OPERATE,
           help: "The rollout goes on from its current wave. Resuming a halt answers for the failures so far."},
  halt: {label: "Halt", from: ["rolling", "paused"], roles: OPERATE,
         help: "No new exposures, at once. Nothing is undone until you roll back."},
  rollback: {label: "Roll back", from: ["rolling", "paused", "halted", "completed"], roles: OPERATE,
             help: "Every exposed device returns to its last-known-good version."},
  approve: {label: "Approve", from: ["draft", "ready"], roles: ["approver", "admin"],
            help: "Approve the release as it is now: artifact, plan and validation results (never your own)."},
};

// -- building the page -------------------------------------------------------------------------
const SVG = "http://www.w3.org/2000/svg";

function attrs(el, given) {
  for (const [key, value] of Object.entries(given || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "text") el.textContent = String(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  return el;
}

function add(el, kids) {
  for (const kid of kids.flat(Infinity)) {
    if (kid === null || kid === undefined || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const h = (tag, given, ...kids) => add(attrs(document.createElement(tag), given), kids);
const s = (tag, given, ...kids) => add(attrs(document.createElementNS(SVG, tag), given), kids);
const $ = (selector) => document.querySelector(selector);

/** Replace a container's content, keeping the <details> a person opened open. */
function fill(container, ...kids) {
  const open = new Set([...container.querySelectorAll("details[open][data-key]")].map((d) => d.dataset.key));
  container.replaceChildren(...kids.flat(Infinity).filter((k) => k !== null && k !== undefined && k !== false));
  for (const d of container.querySelectorAll("details[data-key]")) d.open = open.has(d.dataset.key);
}

function table(headers, rows, empty = "none") {
  if (!rows.length) return h("p", {class: "muted", text: empty});
  const head = h("tr", {}, headers.map(([label, cls]) => h("th", {class: cls, text: label})));
  return h("table", {}, h("thead", {}, head), h("tbody", {}, rows));
}

const badge = (text, cls, more = {}) => h("span", {class: `badge ${cls}`, text, ...more});
const phaseBadge = (phase, more = {}) => badge(phase.replace("_", " "), `phase-${phase}`, {"data-phase": phase, ...more});

function when(iso) {
  if (!iso) return "";
  const at = new Date(iso);
  const seconds = Math.round((Date.now() - at.getTime()) / 1000);
  const ago = seconds < 60 ? `${Math.max(seconds, 0)} s ago` : seconds < 3600 ? `${Math.round(seconds / 60)} min ago`
    : seconds < 86400 ? `${Math.round(seconds / 3600)} h ago` : `${Math.round(seconds / 86400)} d ago`;
  return h("span", {title: at.toISOString(), text: `${at.toLocaleTimeString()} (${ago})`});
}

function duration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 90) return `${Math.round(seconds)}s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.round(seconds / 3600)}h`;
  return `${Math.round(seconds / 86400)}d`;
}

const pct = (part, whole) => (whole ? `${(100 * part / whole).toFixed(part === whole || part === 0 ? 0 : 1)}%` : "–");
const num = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString());
const eText = (e) => (e === null || e === undefined ? "–" : e >= 1000 ? e.toExponential(2) : Number(e.toPrecision(3)).toString());

// -- the API -----------------------------------------------------------------------------------
class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

function signIn(message) {
  sessionStorage.removeItem(TOKEN);
  sessionStorage.removeItem(WHO);
  if (message) sessionStorage.setItem(NOTICE, message);
  location.assign(`/ui/login?next=${encodeURIComponent(location.pathname)}`);
}

async function api(path, body) {
  const token = sessionStorage.getItem(TOKEN);
  if (!token) {
    signIn("Sign in with an API token to see the dashboard.");
    throw new ApiError(401, "not signed in");
  }
  const headers = {Authorization: `Bearer ${token}`, Accept: "application/json"};
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {method: body === undefined ? "GET" : "POST", headers, cache: "no-store",
                                      credentials: "omit", body: body === undefined ? undefined : JSON.stringify(body)});
  let data = null;
  try { data = await response.json(); } catch { /* not JSON: the status says enough */ }
  const message = data && data.error ? data.error.message : response.statusText;
  if (response.status === 401) {
    signIn(`The server refused the token: ${message}`);
    throw new ApiError(401, message);
  }
  if (!response.ok) throw new ApiError(response.status, `${response.status}: ${message}`);
  return data;
}

function notice(text, ok = false) {
  const el = $("#notice");
  if (!el) return;
  el.hidden = !text;
  el.textContent = text || "";
  el.classList.toggle("ok", ok);
}

/** Run refresh now and every POLL_MS while the tab is visible; stop on a refusal that will not
 *  change by asking again (403, 404), say why, and hand it to stopped() to show in place.
 *  Returns a function that refreshes at once. */
function live(refresh, onStop) {
  let timer = null;
  let busy = false;
  let stopped = false;
  const status = $("#live");
  async function tick() {
    clearTimeout(timer);
    timer = null;
    if (busy || stopped || document.hidden) return;
    busy = true;
    try {
      await refresh();
      if (status) { status.textContent = `live · ${new Date().toLocaleTimeString()}`; status.classList.remove("stale"); }
    } catch (err) {
      if (err instanceof ApiError && [401, 403, 404].includes(err.status)) {
        stopped = err.status !== 401;
        if (stopped) {
          notice(err.message);
          if (onStop) onStop(err);
        }
      } else if (status) {
        status.textContent = `stale: ${err.message} (retrying)`;
        status.classList.add("stale");
      }
    } finally {
      busy = false;
    }
    if (!stopped) timer = setTimeout(tick, POLL_MS);
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden && timer === null) tick(); });
  tick();
  return tick;
}

async function header() {
  $("#signout")?.addEventListener("click", () => {
    sessionStorage.clear();
    location.assign("/ui/login");
  });
  const who = await api("/v1/whoami");
  sessionStorage.setItem(WHO, JSON.stringify(who));
  const scope = who.team ? ` · team ${who.team}` : who.tenant ? ` · tenant ${who.tenant}` : "";
  $("#who").textContent = `${who.name} · ${who.role}${scope}`;
  return who;
}

// -- rollouts and fleet ------------------------------------------------------------------------
function waveBars(r) {
  return h("div", {class: "progress"}, r.waves.map((w, i) => {
    const current = i === r.wave && !["completed", "rolled_back"].includes(r.phase);
    const share = w.admitted ? Math.min(100, 100 * w.exposed / w.admitted) : 0;
    return h("div", {class: `wavebar${current ? " current" : ""}`,
                     title: `${w.name}: ${w.exposed} exposed of ${w.admitted} admitted`},
      h("span", {class: "label", text: `${w.name} ${num(w.exposed)}/${num(w.admitted)}`}),
      h("div", {class: "track"}, h("div", {class: "fill", "data-share": share.toFixed(0)})));
  }));
}

function renderRollouts(rollouts) {
  const rows = rollouts.map((r) => {
    const last = r.last;
    const reason = last ? h("div", {class: last.to === "halted" ? "error" : ""}, last.reason) : "";
    return h("tr", {"data-release": r.release},
      h("td", {}, h("a", {href: `/ui/rollouts/${encodeURIComponent(r.release)}`, text: `${r.content_type} ${r.version}`}),
        h("div", {class: "muted mono", text: r.release})),
      h("td", {}, phaseBadge(r.phase)),
      h("td", {text: r.waves.length ? `${r.wave + 1} of ${r.waves.length} · ${r.waves[r.wave].name}` : "–"}),
      h("td", {}, waveBars(r)),
      h("td", {class: "reason"}, reason, last ? h("div", {class: "muted"}, `${last.intent} by ${last.actor} · `, when(last.at)) : ""),
      h("td", {}, when(r.created_at), h("div", {class: "muted", text: `by ${r.created_by}`})));
  });
  fill($("#rollouts"), table([["Release"], ["Phase"], ["Wave"], ["Exposed / admitted per wave"], ["Last change and why"],
                              ["Created"]], rows, "No releases yet."));
  for (const bar of document.querySelectorAll(".wavebar .fill")) bar.style.width = `${bar.dataset.share}%`;
}

function counts(title, byName, total) {
  const entries = Object.entries(byName);
  return h("div", {},
    h("h3", {text: title}),
    entries.length ? entries.map(([name, n]) => h("div", {class: "count-row"},
      h("span", {text: name}), h("span", {class: "num", text: num(n)}),
      h("div", {class: "track"}, h("div", {class: "fill", "data-share": total ? (100 * n / total).toFixed(1) : 0}))))
      : h("p", {class: "muted", text: "none"}));
}

function renderFleet(fleet) {
  fill($("#fleet"),
    h("p", {}, h("b", {text: num(fleet.devices)}), " devices enrolled"),
    h("div", {class: "fleet"},
      counts("By platform", fleet.platforms, fleet.devices),
      counts("By region", fleet.regions, fleet.devices),
      Object.entries(fleet.versions).map(([ct, versions]) => counts(`${ct}: versions`, versions, fleet.devices))));
  for (const bar of document.querySelectorAll("#fleet .fill")) bar.style.width = `${bar.dataset.share}%`;
}

async function rolloutsPage() {
  await header();
  live(async () => {
    const data = await api("/ui/data/overview");
    renderRollouts(data.rollouts);
    renderFleet(data.fleet);
  }, (err) => fill($("#rollouts"), h("p", {class: "error", text: err.message})));
}

// -- one rollout -------------------------------------------------------------------------------
function renderSummary(st) {
  const wave = st.waves[st.wave];
  const t = st.totals;
  fill($("#summary"),
    h("h1", {}, `${st.content_type} ${st.version}`, phaseBadge(st.phase, {id: "phase", class: `badge big phase-${st.phase}`})),
    h("div", {class: "facts"},
      h("span", {}, "release ", h("b", {class: "mono", text: st.release})),
      h("span", {}, "plan ", h("b", {text: st.plan})),
      h("span", {}, "wave ", h("b", {text: `${st.wave + 1} of ${st.waves.length} · ${wave ? wave.name : ""}`})),
      h("span", {}, "exposed ", h("b", {text: num(t.exposed)}), " · healthy ", h("b", {text: num(t.healthy)}),
        " · failed ", h("b", {text: num(t.failed)}), " · reverted ", h("b", {text: num(t.reverted)})),
      h("span", {}, "created by ", h("b", {text: st.created_by}), " ", when(st.created_at))));
  document.title = `${st.content_type} ${st.version} (${st.phase}) · Ringfence`;
}

function renderBanners(st) {
  const halt = [...st.history].reverse().find((e) => e.to === "halted");
  const back = [...st.history].reverse().find((e) => e.to === "rolling_back");
  const banner = $("#halt");
  const showHalt = halt && ["halted", "rolling_back", "rolled_back"].includes(st.phase);
  banner.hidden = !showHalt;
  if (showHalt) {
    fill(banner,
      h("div", {class: "title"}, `Halted by ${halt.actor} · `, when(halt.at)),
      h("div", {class: "reason", id: "halt-reason", text: halt.reason}),
      back ? h("div", {}, `Rollback requested by ${back.actor}: `, h("b", {text: back.reason || "(no reason)"})) : null);
  }
  const override = st.validation && st.validation.emergency_override;
  const box = $("#override");
  box.hidden = !override;
  if (override) {
    fill(box,
      h("div", {class: "title", text: "Emergency override: started past its gates"}),
      h("div", {}, `by ${override.actor} `, when(override.at), ` · reason: `, h("b", {text: override.reason || "(none)"})),
      h("div", {text: `overrode: ${(override.checks || []).join("; ") || "–"} · emergency approval by ${
        (override.approved_by || []).join(", ") || "–"}`}));
  }
}

function renderActions(st, who) {
  const role = who ? who.role : "?";
  const mayAct = Object.values(ACTIONS).some((a) => a.roles.includes(role));
  for (const button of document.querySelectorAll(".actions button[data-action]")) {
    const action = ACTIONS[button.dataset.action];
    const allowedRole = who && action.roles.includes(who.role);
    const allowedPhase = action.from.includes(st.phase);
    button.disabled = !(allowedRole && allowedPhase);
    button.title = !allowedRole
      ? `role ${role} may not ${action.label.toLowerCase()}; needs ${action.roles.join(", ")}`
      : !allowedPhase ? `not while the rollout is ${st.phase.replace("_", " ")}` : action.help;
  }
  $("#action-hint").textContent = mayAct ? "" : `Signed in as ${role}: you can watch, not act.`;
}

function renderWaiting(st) {
  // What the current wave still needs before it may be promoted: evidence, never elapsed time.
  const box = $("#waiting");
  const lines = st.waiting || [];
  box.hidden = !lines.length;
  if (lines.length) {
    fill(box, h("div", {class: "title", text: `Wave ${st.wave_name} is waiting for`}),
      h("ul", {}, ...lines.map((line) => h("li", {text: line}))));
  }
}

function renderWaves(st) {
  const rows = st.waves.map((w) => h("tr", {class: w.index === st.wave ? "current" : ""},
    h("td", {text: `${w.index + 1}. ${w.name}`}),
    h("td", {}, badge(w.state, `st-${w.state}`)),
    ...["admitted", "exposed", "activated", "healthy", "failed", "reverted"].map((k) =>
      h("td", {class: `num${k === "failed" && w.failed ? " error" : ""}`, text: num(w[k])})),
    h("td", {text: [w.share !== null ? `${Math.round(w.share * 100)}% of fleet` : null,
                    w.max_devices.total !== null ? `≤ ${num(w.max_devices.total)} devices` : null,
                    w.max_devices.per_stratum !== null ? `≤ ${num(w.max_devices.per_stratum)} per stratum` : null]
      .filter(Boolean).join(" · ") || "–"}),
    h("td", {text: duration(w.soak_s)}),
    h("td", {class: "num", text: w.failure_budget === null ? "–" : num(w.failure_budget)}),
    h("td", {class: "num", text: w.min_devices === null ? "–" : num(w.min_devices)})));
  fill($("#waves"), table([["Wave"], ["State"], ["Admitted", "num"], ["Exposed", "num"], ["Activated", "num"],
                           ["Healthy", "num"], ["Failed", "num"], ["Reverted", "num"], ["Caps"], ["Soak"],
                           ["Budget", "num"], ["Min devices", "num"]], rows));
}

function evidence(numbers) {
  if (!numbers || numbers.e_value === undefined || !numbers.threshold) return null;
  const e = numbers.e_value;
  const share = Math.max(0, Math.min(1, Math.log(Math.max(e, 1)) / Math.log(numbers.threshold)));
  const fillBar = h("div", {class: `fill${e >= numbers.threshold ? " over" : ""}`, "data-share": (share * 100).toFixed(1)});
  return h("div", {class: "evidence", title: "e-value against the halt threshold (log scale)"},
    h("span", {text: `E = ${eText(e)}`}), h("div", {class: "track"}, fillBar),
    h("span", {text: `halts at ${eText(numbers.threshold)}`}));
}

function verdictItem(v) {
  return h("li", {"data-judge": v.judge},
    badge(v.phase, `v-${v.phase}`), " ", h("b", {text: v.judge}), " ", h("span", {text: v.sentence}), evidence(v.numbers));
}

/** An SVG chart: share of exposed (red) and control (grey, dashed) devices failed over time. */
function chart(stratum, curve, columns, markers, span) {
  const W = 420, H = 150, L = 38, R = 10, T = 10, B = 22;
  const col = Object.fromEntries(columns.map((c, i) => [c, i]));
  const pts = curve.points;
  const rate = (p, f, d) => (p[col[d]] ? p[col[f]] / p[col[d]] : null);
  const exposed = pts.map((p) => [p[col.at_s], rate(p, "exposed_failed", "exposed")]);
  const control = pts.map((p) => [p[col.at_s], rate(p, "control_failed", "control")]);
  const top = Math.max(0, ...exposed.map((p) => p[1] || 0), ...control.map((p) => p[1] || 0));
  const ymax = [0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1].find((v) => v >= top) || 1;
  const x = (t) => L + (span ? (t / span) * (W - L - R) : 0);
  const y = (r) => T + (1 - r / ymax) * (H - T - B);
  const path = (series) => {
    let d = "";
    let pen = "M";
    for (const [t, r] of series) {
      if (r === null) { pen = "M"; continue; }
      d += `${pen}${x(t).toFixed(1)},${y(r).toFixed(1)} `;
      pen = "L";
    }
    return d.trim();
  };
  const last = pts[pts.length - 1] || [];
  const label = `${stratum}: ${last[col.exposed_failed] ?? 0} of ${last[col.exposed] ?? 0} exposed failed vs ${
    last[col.control_failed] ?? 0} of ${last[col.control] ?? 0} control`;
  return s("svg", {class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, "data-stratum": stratum},
    s("title", {text: label}),
    [0, 0.5, 1].map((f) => [
      s("line", {class: f ? "grid" : "axis", x1: L, x2: W - R, y1: y(ymax * f), y2: y(ymax * f)}),
      s("text", {x: L - 4, y: y(ymax * f) + 3, "text-anchor": "end", text: `${Math.round(ymax * f * 1000) / 10}%`}),
    ]),
    s("line", {class: "axis", x1: L, x2: L, y1: T, y2: H - B}),
    [0, 0.5, 1].map((f) => s("text", {x: x(span * f), y: H - 6, "text-anchor": f === 0 ? "start" : f === 1 ? "end" : "middle",
                                      text: `${duration(span * f)}`})),
    markers.filter((m) => m.t >= 0 && m.t <= span).map((m) => [
      s("line", {class: "marker", x1: x(m.t), x2: x(m.t), y1: T, y2: H - B}),
      s("text", {class: "marker-label", x: x(m.t) + 3, y: T + 9, text: m.label}),
    ]),
    s("path", {class: "control", d: path(control)}),
    s("path", {class: "exposed", d: path(exposed)}));
}

function renderHealth(st, curves) {
  const current = (st.verdicts || {})[String(st.wave)];
  const rollout = current && current.rollout;
  fill($("#rollout-verdict"), rollout
    ? h("div", {class: "panel rollout-verdict"}, h("ul", {class: "verdicts"}, verdictItem(rollout)),
      h("div", {class: "muted", text: `overall for wave ${st.wave + 1}: ${current.overall}`}))
    : h("p", {class: "muted", text: ["rolling", "paused", "halted"].includes(st.phase)
      ? "No verdicts yet." : `The judges watch rolling, paused and halted rollouts; this one is ${st.phase.replace("_", " ")}.`}));
  const byStratum = new Map();
  for (const c of curves.strata) byStratum.set(c.stratum, {curve: c, verdicts: []});
  for (const v of (current ? current.strata : [])) {
    if (!byStratum.has(v.stratum)) byStratum.set(v.stratum, {curve: null, verdicts: []});
    byStratum.get(v.stratum).verdicts.push(v);
  }
  const start = curves.start ? new Date(curves.start).getTime() : 0;
  const span = curves.start ? (new Date(curves.end).getTime() - start) / 1000 : 0;
  const markers = st.history.filter((e) => ["halted", "rolling_back", "paused"].includes(e.to) || e.intent === "advance")
    .map((e) => ({t: (new Date(e.at).getTime() - start) / 1000, label: e.intent === "advance" ? "wave" : e.intent}));
  const failing = ({curve, verdicts}) => verdicts.some((v) => v.phase === "failed")
    || (curve && curve.points.length && curve.points[curve.points.length - 1][2] > 0);
  const cards = [...byStratum.entries()]
    .sort(([a, x], [b, y]) => (failing(y) - failing(x)) || a.localeCompare(b))
    .map(([stratum, entry]) => {
      const worst = ["failed", "error", "inconclusive", "running", "passed"].find((p) => entry.verdicts.some((v) => v.phase === p));
      const last = entry.curve ? entry.curve.points[entry.curve.points.length - 1] : null;
      return h("div", {class: `stratum${failing(entry) ? " failing" : ""}`, "data-stratum": stratum},
        h("h3", {}, h("span", {text: stratum}), worst ? badge(worst, `v-${worst}`) : null),
        h("div", {class: "legend"}, h("span", {class: "exposed", text: "exposed: share failed"}),
          h("span", {class: "control", text: "control: share failed"})),
        entry.curve ? chart(stratum, entry.curve, curves.columns, markers, span) : null,
        last ? h("div", {class: "muted", text: `exposed ${last[2]} of ${last[1]} failed (${pct(last[2], last[1])}) · control ${
          last[4]} of ${last[3]} (${pct(last[4], last[3])})`}) : null,
        h("ul", {class: "verdicts"}, entry.verdicts.map(verdictItem)));
    });
  fill($("#strata"), cards.length ? cards : h("p", {class: "muted", text: "No device exposed yet."}));
  for (const bar of document.querySelectorAll(".evidence .fill")) bar.style.width = `${bar.dataset.share}%`;
}

function renderHistory(st) {
  const rows = [...st.history].reverse().map((e, i) => h("tr", {"data-intent": e.intent},
    h("td", {}, when(e.at)),
    h("td", {}, h("b", {text: e.intent})),
    h("td", {}, e.from ? phaseBadge(e.from) : "", " → ", phaseBadge(e.to),
      e.from_wave !== e.to_wave ? h("span", {class: "muted", text: ` wave ${e.from_wave + 1} → ${e.to_wave + 1}`}) : ""),
    h("td", {text: e.actor}),
    h("td", {class: "reason"}, h("div", {class: e.to === "halted" ? "error" : "", text: e.reason}),
      Object.keys(e.details || {}).length
        ? h("details", {"data-key": `h${st.history.length - i}`}, h("summary", {text: "numbers"}),
          h("pre", {text: JSON.stringify(e.details, null, 1)})) : "")));
  fill($("#history"), table([["When"], ["Intent"], ["Phase"], ["Who"], ["Why"]], rows));
}

function renderValidation(st) {
  const v = st.validation;
  if (!v) { fill($("#validation"), h("p", {class: "muted", text: "No validation record."})); return; }
  const gate = v.unvalidated_reason
    ? h("p", {class: "stale-tag"}, "Registered without validation: ", h("span", {text: v.unvalidated_reason}))
    : v.ok ? h("p", {class: "ok", text: "Gate open: every required validator passed."})
      : h("div", {}, h("p", {class: "error", text: "Gate closed:"}), h("ul", {}, v.problems.map((p) => h("li", {text: p}))));
  const override = v.emergency_override
    ? h("p", {class: "emergency-tag", text: `EMERGENCY OVERRIDE by ${v.emergency_override.actor}: ${v.emergency_override.reason || ""}`})
    : null;
  const rows = v.results.map((r) => h("tr", {},
    h("td", {text: r.validator}), h("td", {class: "mono", text: r.target || "–"}),
    h("td", {}, badge(r.status, `s-${r.status}`)), h("td", {text: r.message})));
  fill($("#validation"), override, gate,
    v.required.length ? h("p", {class: "muted", text: `required: ${v.required.join(", ")}`}) : null,
    table([["Validator"], ["Target"], ["Status"], ["Message"]], rows, "No results."));
}

function renderApprovals(st) {
  const a = st.approvals;
  const list = (items, tag) => items.map((x) => h("li", {}, tag, h("b", {text: x.approver}), " ", when(x.at),
    x.reason ? h("span", {text: `: ${x.reason}`}) : ""));
  fill($("#approvals"),
    h("p", {}, `${a.valid.length} of ${a.required} required · `,
      h("span", {class: a.ok ? "ok" : "error", text: a.ok ? "enough" : "not enough"})),
    h("ul", {}, list(a.valid, ""), list(a.emergency, h("span", {class: "emergency-tag", text: "EMERGENCY "})),
      list(a.stale, h("span", {class: "stale-tag", text: "stale (an earlier plan or validation) "}))));
  fill($("#freezes"), st.freezes.length
    ? h("ul", {}, st.freezes.map((f) => h("li", {}, h("b", {text: f.team ? `team ${f.team}` : "everyone"}),
      ` until ${new Date(f.ends_at).toLocaleString()}: `, h("span", {text: f.reason}))))
    : h("p", {class: "muted", text: "No freeze window now."}));
  const held = st.held_by_policy || {};
  const total = Object.values(held).reduce((x, y) => x + y, 0);
  fill($("#held"), h("p", {}, h("b", {text: num(total)}), " devices held: ",
    Object.entries(held).map(([k, n]) => `${k} ${num(n)}`).join(" · ")));
}

async function rolloutPage() {
  const id = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const who = await header();
  let status = null;
  const render = (st, curves) => {
    if (status && st.revision < status.revision) return;  // a poll that left before an action answered
    status = st;
    renderSummary(st);
    renderBanners(st);
    renderActions(st, who);
    renderWaiting(st);
    renderWaves(st);
    if (curves) renderHealth(st, curves);
    renderHistory(st);
    renderValidation(st);
    renderApprovals(st);
  };
  const refresh = live(async () => {
    const [st, curves] = await Promise.all([api(`/v1/rollouts/${encodeURIComponent(id)}`),
                                            api(`/ui/data/rollouts/${encodeURIComponent(id)}/curves`)]);
    render(st, curves);
  }, (err) => fill($("#summary"), h("h1", {text: id}), h("p", {class: "error", text: err.message})));

  const dialog = $("#action-dialog");
  const reason = $("#action-reason");
  const error = $("#action-error");
  let chosen = null;
  for (const button of document.querySelectorAll(".actions button[data-action]")) {
    button.addEventListener("click", () => {
      chosen = button.dataset.action;
      const action = ACTIONS[chosen];
      $("#action-title").textContent = `${action.label}: ${status ? `${status.content_type} ${status.version}` : id}`;
      $("#action-help").textContent = action.help;
      $("#action-confirm").textContent = action.label;
      $("#action-emergency-row").hidden = chosen !== "approve";
      $("#action-emergency").checked = false;
      reason.value = "";
      error.hidden = true;
      dialog.showModal();
      reason.focus();
    });
  }
  $("#action-cancel").addEventListener("click", () => dialog.close());
  $("#action-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const action = ACTIONS[chosen];
    const text = reason.value.trim();
    if (!text) { error.textContent = "Give a reason: it goes into the history and the audit log."; error.hidden = false; return; }
    const confirm = $("#action-confirm");
    confirm.disabled = true;
    try {
      const st = chosen === "approve"
        ? await api(`/v1/releases/${encodeURIComponent(id)}/approve`, {reason: text, emergency: $("#action-emergency").checked})
        : await api(`/v1/rollouts/${encodeURIComponent(id)}/${chosen}`, {reason: text});
      dialog.close();
      notice(`${action.label}: done; the rollout is ${st.phase.replace("_", " ")}.`, true);
      render(st, null);
      refresh();
    } catch (err) {
      error.textContent = `The server refused: ${err.message}`;
      error.hidden = false;
      notice(`${action.label} refused: ${err.message}`);
    } finally {
      confirm.disabled = false;
    }
  });
}

// -- the audit log -----------------------------------------------------------------------------
async function auditPage() {
  await header();
  let verifiedAt = 0;
  live(async () => {
    const data = await api("/v1/audit?limit=200");
    const rows = [...data.entries].reverse().map((e) => h("tr", {"data-seq": e.seq},
      h("td", {class: "num", text: e.seq}), h("td", {}, when(e.at)),
      h("td", {}, h("b", {text: e.actor}), e.role ? h("span", {class: "muted", text: ` ${e.role}`}) : ""),
      h("td", {class: "mono", text: e.source || ""}),
      h("td", {text: e.action}),
      h("td", {}, e.target && e.target.startsWith("rel-")
        ? h("a", {href: `/ui/rollouts/${encodeURIComponent(e.target)}`, class: "mono", text: e.target})
        : h("span", {class: "mono", text: e.target || ""})),
      h("td", {class: "reason"}, h("div", {text: e.reason}),
        Object.keys(e.details || {}).length ? h("details", {"data-key": `a${e.seq}`}, h("summary", {text: "details"}),
          h("pre", {text: JSON.stringify(e.details, null, 1)})) : "")));
    fill($("#audit"), table([["Seq", "num"], ["When"], ["Who"], ["From"], ["Action"], ["Target"], ["Why"]], rows,
                            "The log is empty."));
    if (Date.now() - verifiedAt > 30000) {  // a walk of the whole chain: not on every refresh
      verifiedAt = Date.now();
      const v = await api("/v1/audit/verify");
      fill($("#verify"), v.ok
        ? h("p", {class: "ok", id: "verify-result",
                  text: `Chain verified: ${num(v.entries)} entries intact, head #${v.head.seq} ${v.head.hash.slice(0, 16)}…`})
        : h("p", {class: "error", id: "verify-result",
                  text: `CHAIN BROKEN at entry #${v.broken.seq}: ${v.broken.problem}`}),
        h("p", {class: "muted"}, "verified ", when(new Date().toISOString()), " · again every 30 s"));
    }
  }, (err) => fill($("#verify"), h("p", {class: "error", text: `The audit log is not open to this token: ${err.message}`})));
}

// -- signing in --------------------------------------------------------------------------------
function loginPage() {
  const given = new URLSearchParams(location.search).get("next") || "/";
  const next = given.startsWith("/") && !given.startsWith("//") && !given.startsWith("/\\") ? given : "/";
  const error = $("#login-error");
  const remembered = sessionStorage.getItem(NOTICE);
  if (remembered) {
    sessionStorage.removeItem(NOTICE);
    error.textContent = remembered;
    error.hidden = false;
  }
  $("#login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = $("#token").value.trim();
    const response = await fetch("/v1/whoami", {headers: {Authorization: `Bearer ${token}`}, cache: "no-store",
                                                 credentials: "omit"});
    let data = null;
    try { data = await response.json(); } catch { /* the status says enough */ }
    if (!response.ok) {
      error.textContent = `Not signed in: ${data && data.error ? data.error.message : response.statusText}`;
      error.hidden = false;
      return;
    }
    sessionStorage.setItem(TOKEN, token);
    sessionStorage.setItem(WHO, JSON.stringify(data));
    location.assign(next);
  });
}

const PAGES = {rollouts: rolloutsPage, rollout: rolloutPage, audit: auditPage, login: loginPage};

document.addEventListener("DOMContentLoaded", () => {
  const page = PAGES[document.body.dataset.page];
  Promise.resolve(page ? page() : null).catch((err) => {
    if (!(err instanceof ApiError && err.status === 401)) notice(err.message || String(err));
  });
});
