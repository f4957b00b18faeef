// fleetlearn operator dashboard: no framework, no build step. State arrives as server-sent
// events (/api/events); commands go out as POSTs that carry the X-Fleet-Request header.
"use strict";

const ui = {
  snapshot: null, me: null, selected: null, tiles: new Map(), held: new Set(), jogTimer: null,
  view: "fleet", learningTimer: null, renders: 0, pictures: 0,
};
window.fleetDashboard = ui;  // for tests and benchmarks: counts of live updates received
const JOG_KEYS = {w: [1, 0, 0], s: [-1, 0, 0], a: [0, 1, 0], d: [0, -1, 0], r: [0, 0, 1], f: [0, 0, -1]};
const JOG_BUTTONS = [["x+", "w", "+x"], ["x-", "s", "−x"], ["y+", "a", "+y"], ["y-", "d", "−y"],
                     ["z+", "r", "up"], ["z-", "f", "down"]];
const JOG_REPEAT_MS = 150, JOG_HOLD_S = 0.3;
// Pictures: thumbnails arrive inside the event stream (twice a second, only those that changed);
// the robot you drive or have selected is refetched more often, for driving.
const PICTURE_FOCUS_EVERY_MS = 150;
const COLORS = ["#3fb27f", "#3d7eff", "#ff9f1a", "#e05d9a", "#a07cff", "#35c2d6", "#c9d36a"];

// ---------------------------------------------------------------------------------------------
// talking to the learner

async function api(path, body) {
  const response = await fetch(path, {
    method: "POST", headers: {"Content-Type": "application/json", "X-Fleet-Request": "1"},
    body: JSON.stringify(body || {}),
  });
  if (response.status === 401) { location.href = "/"; return null; }
  const data = await response.json().catch(() => ({}));
  if (!response.ok) { toast(data.detail || `${response.status} ${response.statusText}`); return null; }
  return data;
}

function toast(text) {
  const el = document.getElementById("toast");
  el.textContent = text;
  el.classList.remove("hidden");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.add("hidden"), 5000);
}

function connect() {
  const events = new EventSource("/api/events");
  const status = document.getElementById("connection");
  events.addEventListener("hello", (e) => {
    ui.me = JSON.parse(e.data).operator;
    document.getElementById("operator").textContent = ui.me;
  });
  events.onmessage = (e) => {
    status.textContent = "live"; status.className = "good";
    render(JSON.parse(e.data));
  };
  events.onerror = async () => {
    status.textContent = "reconnecting…"; status.className = "bad";
    const me = await fetch("/api/me").catch(() => null);
    if (me && me.status === 401) location.href = "/";
  };
}

// ---------------------------------------------------------------------------------------------
// fleet view

function render(snapshot) {
  ui.snapshot = snapshot;
  ui.renders += 1;
  setText(document.getElementById("fact-version"),
    snapshot.published_version === null ? "no policy yet" : `v${snapshot.published_version} published`);
  setText(document.getElementById("fact-ingest"), `${snapshot.ingest_steps_per_s.toFixed(0)} steps/s`);
  setText(document.getElementById("fact-help"),
    `help ${snapshot.served} served · ${snapshot.cancelled} cancelled · ${snapshot.help_requests} asked`);
  renderQueue(snapshot);
  const seen = new Set();
  for (const robot of snapshot.robots) {
    seen.add(robot.id);
    if (!ui.tiles.has(robot.id)) ui.tiles.set(robot.id, createTile(robot.id));
    updateTile(ui.tiles.get(robot.id), robot, snapshot);
  }
  for (const [id, tile] of ui.tiles) if (!seen.has(id)) { tile.root.remove(); ui.tiles.delete(id); }
  renderCommands(snapshot.commands);
  if (!drivingRobot() && ui.held.size) releaseJog();
}

function renderQueue(snapshot) {
  const queue = document.getElementById("queue");
  const key = JSON.stringify(snapshot.queue.map((r) => [r.robot_id, r.reason, Math.round(r.waiting_s)]));
  if (queue.dataset.key === key) return;
  queue.dataset.key = key;
  queue.replaceChildren();
  if (!snapshot.queue.length) {
    queue.innerHTML = '<span class="muted">No help requests.</span>';
    return;
  }
  snapshot.queue.forEach((request, i) => {
    const chip = document.createElement("span");
    chip.className = "request";
    chip.dataset.robot = request.robot_id;
    const score = request.threshold > 0 ? ` ${request.score.toFixed(2)} > τ ${request.threshold.toFixed(2)}` : "";
    chip.textContent = `${i + 1}. ${request.robot_id} · ${request.reason}${score} · ${request.waiting_s.toFixed(0)} s`;
    chip.onclick = () => select(request.robot_id, true);
    queue.append(chip);
  });
}

function setText(node, text) { if (node.textContent !== text) node.textContent = text; }
function setHTML(node, html) { if (node.dataset.html !== html) { node.innerHTML = html; node.dataset.html = html; } }
function setStyle(node, key, value) { if (node.style[key] !== value) node.style[key] = value; }

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function createTile(id) {
  const root = el("article", "tile");
  root.id = `tile-${id}`;
  root.dataset.robot = id;
  root.innerHTML = `
    <div class="top"><span class="name"></span><span class="badge"></span></div>
    <div class="frame"><img alt="camera"><span class="overlay"></span></div>
    <div class="task"><b class="task-name"></b> <span class="instruction"></span></div>
    <div class="meters">
      <span>episode</span><div class="bar progress"><i></i></div><span class="progress-text"></span>
      <span>FLOAT</span><div class="bar float"><i></i><span class="tau"></span></div><span class="float-text"></span>
    </div>
    <div class="stats"></div>
    <div class="actions"></div>
    <div class="status"></div>`;
  root.querySelector(".name").textContent = id;
  root.addEventListener("click", () => select(id));
  document.getElementById("tiles").append(root);
  const img = root.querySelector("img");
  return {root, img, seq: 0, actionsKey: null, loading: false};
}

function select(id, scroll) {
  ui.selected = id;
  for (const [robot, tile] of ui.tiles) tile.root.classList.toggle("selected", robot === id);
  if (scroll) ui.tiles.get(id)?.root.scrollIntoView({behavior: "smooth", block: "center"});
}

function drivingRobot() {
  const s = ui.snapshot;
  if (!s || !ui.me) return null;
  const robot = s.robots.find((r) => r.operator === ui.me && r.driving && r.remote);
  return robot ? robot.id : null;
}

function updateTile(tile, robot, snapshot) {
  const root = tile.root;
  if (root.dataset.mode !== robot.mode) root.dataset.mode = robot.mode;
  if (root.dataset.operator !== (robot.operator || "")) root.dataset.operator = robot.operator || "";
  const badge = root.querySelector(".badge");
  setText(badge, robot.mode + (robot.operator && robot.driving ? ` · ${robot.operator}` : ""));
  const badgeClass = "badge " + ({"help requested": "help"}[robot.mode] || robot.mode);
  if (badge.className !== badgeClass) badge.className = badgeClass;
  const picture = snapshot.pictures && snapshot.pictures[robot.id];
  if (picture && picture.seq > tile.seq && !tile.loading) {
    tile.img.src = `data:image/png;base64,${picture.png}`;
    tile.seq = picture.seq;
    root.dataset.previewSeq = picture.seq;
    ui.pictures += 1;
  }
  setText(root.querySelector(".overlay"),
    `${robot.version === null || robot.version < 0 ? "no policy" : "v" + robot.version}${robot.kind ? " · " + robot.kind : ""}`);
  setText(root.querySelector(".task-name"), robot.task || "–");
  setText(root.querySelector(".instruction"), robot.instruction ? `“${robot.instruction}”` : "");
  const progress = robot.max_steps ? Math.min(1, (robot.step + 1) / robot.max_steps) : 0;
  setStyle(root.querySelector(".progress > i"), "width", `${(100 * progress).toFixed(1)}%`);
  setText(root.querySelector(".progress-text"), robot.max_steps ? `${robot.step + 1}/${robot.max_steps}` : "–");
  const floatBar = root.querySelector(".bar.float");
  const tau = robot.float_threshold;
  if (tau !== null && tau > 0) {
    const scale = Math.max(tau * 1.5, robot.float_index);
    setStyle(floatBar.querySelector("i"), "width", `${(100 * robot.float_index / scale).toFixed(1)}%`);
    setStyle(floatBar.querySelector(".tau"), "left", `${(100 * tau / scale).toFixed(1)}%`);
    floatBar.classList.toggle("over", robot.float_index > tau);
    setText(root.querySelector(".float-text"), `${robot.float_index.toFixed(3)} / ${tau.toFixed(3)}`);
  } else {
    setStyle(floatBar.querySelector("i"), "width", "0px");
    setStyle(floatBar.querySelector(".tau"), "left", "100%");
    setText(root.querySelector(".float-text"), tau === null ? "uncalibrated" : "off");
  }
  const recent = robot.recent || {};
  let stats = recent.episodes
    ? `last ${recent.episodes} episodes: success <b>${pct(recent.success_rate)}</b> · with intervention <b>${pct(recent.intervention_rate)}</b>`
    : "no finished episodes yet";
  if (robot.spooled_chunks > 5) stats += ` · <b>${robot.spooled_chunks}</b> chunks spooled`;
  setHTML(root.querySelector(".stats"), stats);

  const mine = robot.operator === ui.me && robot.driving && robot.remote;
  const atRobot = robot.operator === ui.me && robot.driving && !robot.remote;
  const key = [robot.mode, robot.online, !!robot.help, mine, atRobot, robot.operator].join("|");
  if (key !== tile.actionsKey) {
    tile.actionsKey = key;
    renderActions(tile, robot, mine, atRobot);
  }
  renderStatus(tile, robot, snapshot);
}

function loadPicture(tile, id, seq, everyMs, latest) {
  // Load the new picture off-screen, then swap, so the tile never flashes empty.
  if (tile.loading || performance.now() - (tile.fetchedAt || 0) < everyMs) return;
  tile.loading = true;
  tile.fetchedAt = performance.now();
  const next = new Image();
  next.onload = () => {
    tile.img.src = next.src; tile.seq = Math.max(tile.seq, seq); tile.loading = false;
    tile.root.dataset.previewSeq = tile.seq; ui.pictures += 1;
  };
  next.onerror = () => { tile.loading = false; };
  next.src = `/api/robots/${encodeURIComponent(id)}/preview.png?seq=${seq}${latest ? "&at=" + Date.now() : ""}`;
}

// The robot you drive, or have selected, between snapshots: its latest picture, whatever its number.
setInterval(() => {
  const id = drivingRobot() || ui.selected;
  const tile = id && ui.tiles.get(id);
  const robot = tile && ui.snapshot?.robots.find((r) => r.id === id);
  if (robot && robot.online && robot.preview_seq) loadPicture(tile, id, robot.preview_seq, PICTURE_FOCUS_EVERY_MS, true);
}, PICTURE_FOCUS_EVERY_MS);

function pct(x) { return x === null || x === undefined ? "–" : `${Math.round(100 * x)}%`; }

function button(label, action, className, onClick) {
  const b = el("button", className, label);
  b.dataset.action = action;
  b.addEventListener("click", (e) => { e.stopPropagation(); onClick(); });
  return b;
}

function renderActions(tile, robot, mine, atRobot) {
  // Rebuilt only when what it shows changes: a button rebuilt under the operator's pointer would
  // lose the press (a held jog button stopped jogging at the next refresh).
  const key = JSON.stringify([robot.online, robot.help && [robot.help.reason, robot.help.position], mine, atRobot,
                              robot.operator, robot.driving, robot.mode]);
  if (tile.actionsKey === key) return;
  tile.actionsKey = key;
  const box = tile.root.querySelector(".actions");
  box.replaceChildren();
  const id = robot.id;
  if (!robot.online) { box.append(el("span", "muted", "offline")); return; }
  if (robot.help) {
    const help = el("div", "helpbox");
    help.append(el("span", "", `Asks for help (${robot.help.reason}), #${robot.help.position} in the queue`));
    const row = el("div", "actions");
    row.append(button("Continue", "continue", "", () => answer(id, "continue")),
               button("Take over", "answer-take-over", "warn", () => answer(id, "take_over")),
               button("End episode", "end", "danger", () => answer(id, "end")));
    help.append(row);
    box.append(help);
  } else if (mine || atRobot) {
    box.append(button("Hand back", "hand-back", "primary", () => api(`/api/robots/${encodeURIComponent(id)}/hand_back`)));
    if (atRobot) box.append(el("span", "muted", "its own teleop device drives"));
  } else if (robot.operator && robot.driving) {
    box.append(el("span", "muted", `${robot.operator} is driving`));
  } else {
    box.append(button("Take over", "take-over", "primary", () => api(`/api/robots/${encodeURIComponent(id)}/take_over`)));
    const local = button("At the robot", "take-over-local", "", () => api(`/api/robots/${encodeURIComponent(id)}/take_over?local=true`));
    local.title = "someone at the robot drives it with its own teleop device (a leader arm; in the sim, the scripted operator)";
    box.append(local);
  }
  if (robot.mode === "paused") box.append(button("Resume", "resume", "", () => api(`/api/robots/${encodeURIComponent(id)}/resume`)));
  else if (robot.mode !== "stopped") box.append(button("Pause", "pause", "", () => api(`/api/robots/${encodeURIComponent(id)}/pause`)));
  box.append(button("Stop", "stop", "danger", () => {
    if (confirm(`Stop ${id}? Its robot process ends.`)) api(`/api/robots/${encodeURIComponent(id)}/stop`);
  }));
  if (mine) box.append(jogPad());
}

function answer(id, what) { api(`/api/robots/${encodeURIComponent(id)}/answer`, {answer: what}); }

function jogPad() {
  const pad = el("div", "jogpad");
  pad.append(el("span", "label", "You are driving: hold a button or W S A D R F; O / G open / close"));
  for (const [name, key, label] of JOG_BUTTONS) {
    const b = el("button", "", label);
    b.dataset.jog = name;
    b.addEventListener("pointerdown", (e) => { e.stopPropagation(); holdJog(key); });
    for (const up of ["pointerup", "pointerleave", "pointercancel"]) b.addEventListener(up, () => letGoJog(key));
    b.addEventListener("click", (e) => e.stopPropagation());
    pad.append(b);
  }
  pad.append(button("open", "gripper-open", "", () => gripper(1)), button("close", "gripper-close", "", () => gripper(-1)));
  return pad;
}

function renderStatus(tile, robot, snapshot) {
  const status = tile.root.querySelector(".status");
  const last = snapshot.commands.find((c) => c.robot_id === robot.id);
  if (!last) { setText(status, ""); status.className = "status"; return; }
  let text = `${last.operator}: ${last.action} — `, cls = "status";
  if (last.accepted === null) text += `sent ${ago(last.issued_at, snapshot.at)}, not yet applied`;
  else if (last.accepted) {
    text += `took effect at step ${last.step} after ${((last.applied_at - last.issued_at) * 1000).toFixed(0)} ms`;
    if (last.result) text += ` (${last.result})`;
    cls += " applied";
  } else { text += `refused: ${last.result}`; cls += " refused"; }
  setText(status, text);
  if (status.className !== cls) status.className = cls;
}

function ago(t, now) { return `${Math.max(0, now - t).toFixed(1)} s ago`; }

function renderCommands(commands) {
  const body = document.querySelector("#commands tbody");
  const key = JSON.stringify(commands.map((c) => [c.command_id, c.accepted]));
  if (body.dataset.key === key) return;
  body.dataset.key = key;
  body.replaceChildren();
  for (const c of commands) {
    const row = el("tr");
    const when = new Date(c.issued_at * 1000).toLocaleTimeString();
    let effect = "pending", cls = "";
    if (c.accepted === true) { effect = c.robot_id === "fleet" ? "done" : `step ${c.step}, ${((c.applied_at - c.issued_at) * 1000).toFixed(0)} ms`; cls = "applied"; }
    if (c.accepted === false) { effect = `refused: ${c.result}`; cls = "refused"; }
    for (const [text, klass] of [[when], [c.operator], [c.robot_id], [c.action + (c.detail ? ` (${c.detail})` : "")], [effect, cls]]) {
      row.append(el("td", klass || "", text));
    }
    body.append(row);
  }
}

// ---------------------------------------------------------------------------------------------
// jogging: repeated short jogs while a key or button is held (the robot stops by itself when
// they stop coming)

function holdJog(key) {
  if (!drivingRobot()) return;
  ui.held.add(key);
  if (!ui.jogTimer) { sendJog(); ui.jogTimer = setInterval(sendJog, JOG_REPEAT_MS); }
}

function letGoJog(key) {
  if (!ui.held.delete(key)) return;
  if (!ui.held.size) releaseJog();
}

function releaseJog() {
  ui.held.clear();
  clearInterval(ui.jogTimer);
  ui.jogTimer = null;
  const robot = drivingRobot();
  if (robot) api(`/api/robots/${encodeURIComponent(robot)}/jog`, {dx: 0, dy: 0, dz: 0, duration_s: 0.05});
}

function sendJog() {
  const robot = drivingRobot();
  if (!robot) { releaseJog(); return; }
  const speed = parseFloat(document.getElementById("jog-speed").value);
  const v = [0, 0, 0];
  for (const key of ui.held) JOG_KEYS[key].forEach((x, i) => { v[i] += x; });
  const clip = (x) => Math.max(-1, Math.min(1, x * speed));
  api(`/api/robots/${encodeURIComponent(robot)}/jog`, {dx: clip(v[0]), dy: clip(v[1]), dz: clip(v[2]), duration_s: JOG_HOLD_S});
}

function gripper(value) {
  const robot = drivingRobot();
  if (robot) api(`/api/robots/${encodeURIComponent(robot)}/jog`, {dx: 0, dy: 0, dz: 0, gripper: value, duration_s: 0.05});
}

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.metaKey || e.ctrlKey || e.altKey) return;
  const key = e.key.toLowerCase();
  if (JOG_KEYS[key] && drivingRobot()) { e.preventDefault(); if (!e.repeat) holdJog(key); return; }
  if (e.repeat) return;
  if (key === "o") return gripper(1);
  if (key === "g") return gripper(-1);
  const robot = ui.snapshot?.robots.find((r) => r.id === ui.selected);
  if (!robot) return;
  if (key === "t") {
    if (robot.operator === ui.me && robot.driving) api(`/api/robots/${encodeURIComponent(robot.id)}/hand_back`);
    else if (robot.help) answer(robot.id, "take_over");
    else api(`/api/robots/${encodeURIComponent(robot.id)}/take_over`);
  } else if (key === "c" && robot.help) answer(robot.id, "continue");
  else if (key === "e" && robot.help) answer(robot.id, "end");
  else if (key === "p") api(`/api/robots/${encodeURIComponent(robot.id)}/${robot.mode === "paused" ? "resume" : "pause"}`);
});
document.addEventListener("keyup", (e) => letGoJog(e.key.toLowerCase()));
window.addEventListener("blur", () => { if (ui.held.size) releaseJog(); });

for (const b of document.querySelectorAll("[data-all]")) {
  b.addEventListener("click", () => {
    const action = b.dataset.all;
    if (action === "stop" && !confirm("Stop every robot? Their robot processes end.")) return;
    api(`/api/robots/all/${action}`);
  });
}

// ---------------------------------------------------------------------------------------------
// learning view

for (const tab of document.querySelectorAll(".tab")) {
  tab.addEventListener("click", () => {
    ui.view = tab.dataset.view;
    for (const t of document.querySelectorAll(".tab")) t.classList.toggle("active", t === tab);
    for (const v of document.querySelectorAll(".view")) v.classList.toggle("hidden", v.id !== `view-${ui.view}`);
    clearInterval(ui.learningTimer);
    if (ui.view === "learning") { loadLearning(); ui.learningTimer = setInterval(loadLearning, 5000); }
  });
}

async function loadLearning() {
  const response = await fetch("/api/learning");
  if (response.status === 401) { location.href = "/"; return; }
  if (!response.ok) return;
  renderLearning(await response.json());
}

function renderLearning(data) {
  // Files the learner could not use and set aside (learner/quarantine.py): a count and the latest.
  const quarantine = document.getElementById("quarantine");
  const q = data.quarantine || {count: 0, latest: []};
  quarantine.classList.toggle("hidden", q.count === 0);
  quarantine.dataset.count = q.count;
  quarantine.textContent = q.count ? `Quarantined files: ${q.count}. Latest: ` +
    q.latest.map((e) => `${e.kind} ${e.path} (${e.reason})`).join("; ") : "";
  const versions = data.versions;
  const tasks = [...new Set(versions.flatMap((v) => Object.keys(v.task_success)))].sort();
  const series = [{name: "all tasks", points: versions.filter((v) => v.success_rate !== null).map((v) => [v.version, v.success_rate])}];
  if (tasks.length > 1) for (const task of tasks) {
    series.push({name: task, points: versions.filter((v) => task in v.task_success).map((v) => [v.version, v.task_success[task]])});
  }
  lineChart("chart-success", series, {ymin: 0, ymax: 1, percent: true});
  const per = (key) => [{name: key, points: versions.filter((v) => v[key] !== null && v[key] !== undefined).map((v) => [v.version, v[key]])}];
  lineChart("chart-interventions", per("interventions_per_episode"), {ymin: 0});
  lineChart("chart-rohe", per("rohe"), {ymin: 0});
  lineChart("chart-human", per("human_time_s"), {ymin: 0});
  lineChart("chart-loss", per("loss"), {ymin: 0});
  lineChart("chart-ingest", [{name: "steps/s", points: data.ingest.map((b) => [b.t, b.steps_per_s])}], {ymin: 0, xlabel: "s ago"});

  const body = document.querySelector("#versions tbody");
  body.replaceChildren();
  const published = ui.snapshot?.published_version;
  for (const v of [...versions].reverse()) {
    const row = el("tr");
    row.dataset.version = v.version;
    const tasksSeen = [...new Set([...Object.keys(v.task_success), ...Object.keys(v.task_interventions_per_episode)])].sort();
    const perTask = tasksSeen.length > 1 ? tasksSeen.map((t) =>
      `${t}: ${pct(v.task_success[t])}, ${fmt(v.task_interventions_per_episode[t], 2)}/ep`).join("; ") : "";
    const cells = [`v${v.version}${v.version === published ? " (published)" : ""}`, v.episodes, v.eval_episodes,
      pct(v.success_rate), perTask || "–", fmt(v.interventions_per_episode, 2), `${v.human_time_s.toFixed(0)} s`,
      fmt(v.rohe, 3), fmt(v.loss, 4), v.propagation_s === null ? "–" : `${v.propagation_s.toFixed(1)} s (${v.robots_reached})`,
      (data.robots_by_version[v.version] || []).join(", ") || "–"];
    for (const c of cells) row.append(el("td", "", String(c)));
    const cell = el("td");
    if (v.version !== published) {
      cell.append(button("Publish again", "publish", "", async () => {
        if (!confirm(`Publish v${v.version} again? Robots swap at their next episode.`)) return;
        if (await api(`/api/versions/${v.version}/publish`)) loadLearning();
      }));
    }
    row.append(cell);
    body.append(row);
  }
}

function fmt(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }

function lineChart(id, series, opts) {
  const svg = document.getElementById(id);
  const W = svg.clientWidth || 360, H = svg.clientHeight || 180, L = 40, R = 10, T = 8, B = 22;
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.replaceChildren();
  const points = series.flatMap((s) => s.points);
  const ns = "http://www.w3.org/2000/svg";
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
    return node;
  };
  if (!points.length) { add("text", {x: W / 2, y: H / 2, "text-anchor": "middle"}, "no data yet"); return; }
  let [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  let y0 = opts.ymin ?? Math.min(...points.map((p) => p[1]));
  let y1 = opts.ymax ?? Math.max(...points.map((p) => p[1]));
  if (y1 <= y0) y1 = y0 + 1;
  const X = (x) => L + (x - x0) / (x1 - x0) * (W - L - R), Y = (y) => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  for (let i = 0; i <= 4; i++) {
    const y = y0 + (y1 - y0) * i / 4;
    add("line", {x1: L, x2: W - R, y1: Y(y), y2: Y(y), class: "grid"});
    add("text", {x: L - 4, y: Y(y) + 3, "text-anchor": "end"}, opts.percent ? `${Math.round(100 * y)}%` : +y.toPrecision(3));
  }
  add("line", {x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis"});
  const xs = [...new Set(points.map((p) => p[0]))].sort((a, b) => a - b);
  const step = Math.max(1, Math.ceil(xs.length / 8));
  xs.filter((_, i) => i % step === 0).forEach((x) => add("text", {x: X(x), y: H - 6, "text-anchor": "middle"}, opts.xlabel ? x : `v${x}`));
  series.forEach((s, i) => {
    if (!s.points.length) return;
    const color = COLORS[i % COLORS.length];
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
    add("path", {d, fill: "none", stroke: color, "stroke-width": 2});
    for (const p of s.points) add("circle", {cx: X(p[0]), cy: Y(p[1]), r: 2.5, fill: color});
    if (series.length > 1) add("text", {x: L + 6 + 90 * i, y: T + 8, fill: color, style: `fill:${color}`}, s.name);
  });
}

connect();
