// The debugger page: renders the server's state and sends actions. Model text is untrusted, so
// every string goes into the DOM as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
let S = null;          // the last state from the server
let replayStep = 1;    // replay: turns shown are 0..replayStep
let busy = false;

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const k of kids) if (k !== null && k !== undefined) e.append(k);
  return e;
}

function showError(msg) {
  $("error-text").textContent = msg;
  $("error").hidden = !msg;
}

async function api(action, body) {
  if (busy) return null;
  busy = true;
  document.body.style.cursor = "progress";
  try {
    const r = await fetch("/api/" + action, {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify(body || {})});
    let reply;
    try { reply = await r.json(); } catch (e) { reply = {ok: false, error: `HTTP ${r.status}`}; }
    showError(reply.ok ? "" : reply.error || `HTTP ${r.status}`);
    if (reply.state) render(reply.state, action);
    return reply;
  } catch (e) {
    showError("the debugger server did not answer: " + e.message);
    return null;
  } finally {
    busy = false;
    document.body.style.cursor = "";
  }
}

function seed(id) {
  const v = $(id).value.trim();
  return v === "" ? null : Number(v);
}

// ------------------------------------------------------------ calls in the text
function renderCall(name, args) {
  const c = S.config;
  if (c.format === "drive")
    return `<call_tool><tool_name>${name}</tool_name><params>${JSON.stringify(args)}</params></call_tool>`;
  return `<tool_call>\n${JSON.stringify({name: name, arguments: args})}\n</tool_call>`;
}

function putCall(name, args) {
  // Replace the last call in the composer (or append one), keeping the text before it.
  const box = $("assistant-text");
  const text = box.value;
  const cut = text.lastIndexOf(S.config.start);
  box.value = (cut >= 0 ? text.slice(0, cut) : text + (text && !text.endsWith("\n") ? "\n" : ""))
    + renderCall(name, args);
}

// ------------------------------------------------------------ images (drag to pick a box)
function figure(im, pickable) {
  const img = el("img", {src: im.url, alt: im.name, "data-name": im.name,
                         width: im.seen[0], height: im.seen[1]});
  const wrap = el("div", {class: "pick"}, img);
  if (pickable) attachPicker(wrap, img, im.name);
  const orig = im.original ? `, original ${im.original[0]}x${im.original[1]}` : "";
  const est = S.policy.tokenized ? "" : " (estimated from the pixel budget)";
  const lvl = im.level == null ? "" : ` \u00b7 router level ${im.level}${im.level ? "" : " (full)"}`;
  return el("figure", {}, wrap, el("figcaption", {
    text: `${im.name}: seen ${im.seen[0]}x${im.seen[1]}${orig} \u00b7 ${im.tokens} tokens${est}${lvl}`}));
}

function attachPicker(wrap, img, name) {
  let start = null, sel = null;
  const at = (ev) => {
    // Pixels of the image as the model saw it: the content box (no border), rescaled when
    // the page shows the image smaller than its natural (seen) size.
    const r = img.getBoundingClientRect();
    const left = r.left + img.clientLeft, top = r.top + img.clientTop;
    const sx = img.naturalWidth / img.clientWidth, sy = img.naturalHeight / img.clientHeight;
    return [Math.max(0, Math.min(img.naturalWidth, (ev.clientX - left) * sx)),
            Math.max(0, Math.min(img.naturalHeight, (ev.clientY - top) * sy)), sx, sy];
  };
  wrap.addEventListener("mousedown", (ev) => {
    ev.preventDefault();
    start = at(ev);
    sel = el("div", {class: "sel"});
    wrap.append(sel);
  });
  wrap.addEventListener("mousemove", (ev) => {
    if (!start) return;
    const p = at(ev);
    const [x0, y0] = [Math.min(start[0], p[0]), Math.min(start[1], p[1])];
    Object.assign(sel.style, {left: x0 / p[2] + "px", top: y0 / p[3] + "px",
      width: Math.abs(p[0] - start[0]) / p[2] + "px", height: Math.abs(p[1] - start[1]) / p[3] + "px"});
  });
  const end = (ev) => {
    if (!start) return;
    const p = at(ev);
    const box = [Math.min(start[0], p[0]), Math.min(start[1], p[1]),
                 Math.max(start[0], p[0]), Math.max(start[1], p[1])].map(Math.round);
    start = null;
    setTimeout(() => sel && sel.remove(), 600);
    if (box[2] - box[0] < 2 || box[3] - box[1] < 2) return;  // a click, not a drag
    putCall("crop", {image: name, bbox: box});
  };
  wrap.addEventListener("mouseup", end);
  wrap.addEventListener("mouseleave", (ev) => start && end(ev));
}

// ------------------------------------------------------------ turns
function turnCard(t, live) {
  const head = el("header", {}, el("span", {text: t.role}),
    el("span", {class: "muted", text: t.role === "assistant"
      ? `turn ${t.turn}${t.source ? " \u00b7 " + t.source : ""}` +
        (S.policy.tokenized ? ` \u00b7 ${t.policy_tokens} policy tokens` : " \u00b7 policy")
      : t.role === "system" && S.policy.tokenized ? "context (its tokens count with the user turn)"
      : (S.policy.tokenized ? `${t.n_tokens} tokens \u00b7 ` : "") + "context"}));
  const card = el("div", {class: "turn", "data-role": t.role, "data-index": t.index}, head,
                  el("pre", {class: "text", text: t.text}));
  if (t.role === "assistant") {
    if (t.call) card.append(el("div", {class: "call"}, "parsed call: ",
                                  el("code", {text: JSON.stringify(t.call)})));
    if (t.parse_error) card.append(el("div", {class: "parse-error",
                                              text: "parse error: " + t.parse_error}));
    if (live) card.append(editor(t));
  }
  if (t.role === "tool" && t.error) card.append(el("div", {class: "tool-error",
                                                       text: "tool error: " + t.error}));
  if (t.images.length) card.append(el("div", {class: "images"},
    ...t.images.map((im) => figure(im, live))));
  return card;
}

function editor(t) {
  const draft = t.call || {name: S.config.tools[0] || "crop", arguments: {bbox: [0, 0, 100, 100]}};
  const area = el("textarea", {class: "call-edit", rows: 3, spellcheck: "false"});
  area.value = JSON.stringify(draft, null, 1);
  const manual = S.policy.mode === "manual";
  return el("details", {class: "edit", ...(t.parse_error ? {open: ""} : {})},
    el("summary", {text: "edit this call / re-run from here"}), area,
    el("div", {class: "row"},
      el("button", {type: "button", class: "rerun", text: "Re-run with this call",
        onclick: () => api("rerun", {turn: t.turn, call: area.value, seed: seed("gen-seed")})}),
      el("button", {type: "button", class: "drop",
        text: manual ? "Drop this and later turns" : "Re-sample from here",
        onclick: () => api("rerun", {turn: t.turn, seed: seed("gen-seed")})})));
}

// ------------------------------------------------------------ tokens
function renderTokens(ep) {
  const box = $("tokens");
  box.replaceChildren();
  if (!ep) { $("token-info").textContent = ""; return; }
  $("token-info").textContent = `${ep.n_tokens} tokens, ${ep.n_policy_tokens} with loss`;
  if (!ep.tokens) {
    box.append(el("p", {class: "muted", text: S.policy.note}));
    for (const t of ep.turns) box.append(el("span", {class: t.role === "assistant" ? "m1" : "m0",
      text: `[${t.role}${t.images.length ? " +" + t.images.length + " image" : ""}] `}));
    return;
  }
  for (const [text, m, n, lp] of ep.tokens) {
    const title = (m ? "policy token" : "context") + (n > 1 ? ` (${n} image tokens)` : "")
      + (lp !== null ? ` logp ${lp}` : "");
    box.append(el("span", {class: (m ? "m1" : "m0") + (n > 1 ? " img-tok" : ""),
                           title: title, text: text}));
  }
}

// ------------------------------------------------------------ whole state
function render(state, action) {
  S = state;
  const ep = state.episode, sm = state.sample, pol = state.policy;
  $("status").textContent = `policy: ${pol.mode}${pol.path ? " (" + pol.path + ")" : ""}` +
    (sm ? ` \u00b7 sample ${sm.id}` : "");
  $("stop-string").textContent = state.config.stop;
  $("policy-note").textContent = pol.note;
  $("policy-mode").value = pol.mode;
  if (document.activeElement !== $("policy-path")) $("policy-path").value = pol.path;
  const doms = $("domain");
  if (!doms.options.length) {
    for (const d of Object.keys(state.domains)) doms.append(el("option", {value: d, text: d}));
    fillKinds();
  }
  $("sample-info").textContent = sm ? `${sm.id}: ${sm.prompt}` +
    (sm.answer !== null ? ` (reference: ${sm.answer})` : " (no reference answer)") +
    sm.notes.map((n) => "\nnote: " + n).join("") : "";
  $("turns").replaceChildren(...(ep ? ep.turns.map((t) => turnCard(t, true)) : []));
  $("episode-info").textContent = ep ? `${ep.n_tool_calls} calls, ${ep.n_tool_errors} errors` +
    (ep.done ? ` \u00b7 finished: ${ep.finish}, answer ${JSON.stringify(ep.answer)}` : "") : "";
  const manual = pol.mode === "manual";
  $("assistant-text").disabled = !manual || !ep || ep.done;
  $("step").disabled = !ep || ep.done;
  $("run").disabled = manual || !ep || ep.done;
  $("step").textContent = manual ? "Step (apply this turn)" : "Step (sample one turn)";
  // Refill the composer after a turn was applied or a sample loaded; keep the person's draft
  // when their action failed.
  const failed = !$("error").hidden;  // showError ran before render
  if (!failed && ["step", "rerun", "shipped", "domain", "upload", "policy", "init"]
      .includes(action)) $("assistant-text").value = state.suggest;
  const sc = state.score;
  $("score-out").replaceChildren(sc ? el("span", {class: sc.reward > 0 ? "good" : "bad",
    text: `reward ${sc.reward} (${sc.check}: answer ${JSON.stringify(sc.answer)}, ` +
          `reference ${JSON.stringify(sc.expected)})`}) : "");
  renderTokens(ep);
  renderReplay(state.replay, action);
}

function fillKinds() {
  const kinds = S.domains[$("domain").value] || [];
  $("kind").replaceChildren(el("option", {value: "", text: "any kind"}),
    ...kinds.map((k) => el("option", {value: k, text: k})));
}

function renderReplay(rp, action) {
  $("replay").hidden = !rp;
  if (!rp) return;
  const sel = $("replay-episode");
  if (action === "replay" || sel.options.length !== rp.episodes.length) {
    sel.replaceChildren(...rp.episodes.map((id, i) => el("option", {value: i, text: id})));
  }
  sel.value = String(rp.index);
  if (action === "replay" || action === "replay_select") replayStep = 1;
  const turns = rp.episode.turns;
  replayStep = Math.max(0, Math.min(replayStep, turns.length - 1));
  $("replay-info").textContent = `${rp.path} \u00b7 ${rp.episode.finish || "unfinished"}` +
    (rp.episode.reward !== null ? ` \u00b7 reward ${rp.episode.reward}` : "");
  $("replay-step").textContent = `turn ${replayStep + 1} of ${turns.length}`;
  $("replay-turns").replaceChildren(...turns.slice(0, replayStep + 1).map((t) => turnCard(t, false)));
}

function wire() {
  $("error-close").onclick = () => showError("");
  $("load-shipped").onclick = () => api("shipped");
  $("domain").onchange = fillKinds;
  $("load-domain").onclick = () => api("domain", {domain: $("domain").value,
    seed: seed("seed"), kind: $("kind").value});
  $("upload").onclick = () => {
    const f = $("upload-file").files[0];
    if (!f) { showError("choose an image file to upload"); return; }
    const rd = new FileReader();
    rd.onload = () => api("upload", {image_b64: rd.result, question: $("upload-question").value,
                                     answer: $("upload-answer").value});
    rd.onerror = () => showError("could not read the file");
    rd.readAsDataURL(f);
  };
  $("set-policy").onclick = () => api("policy", {mode: $("policy-mode").value,
                                                 path: $("policy-path").value});
  $("step").onclick = () => api("step", S.policy.mode === "manual"
    ? {text: $("assistant-text").value} : {seed: seed("gen-seed")});
  $("run").onclick = () => api("run", {seed: seed("gen-seed")});
  $("score").onclick = () => api("score");
  $("save").onclick = () => api("save", {path: $("save-path").value});
  $("replay-open").onclick = () => api("replay", {path: $("replay-path").value});
  $("replay-episode").onchange = () => api("replay_select", {index: Number($("replay-episode").value)});
  const move = (d) => { replayStep += d; renderReplay(S.replay, "move"); };
  $("replay-prev").onclick = () => move(-1);
  $("replay-next").onclick = () => move(1);
  $("replay-all").onclick = () => move(1e9);
}

async function init() {
  wire();
  try {
    const r = await fetch("/api/state");
    const reply = await r.json();
    render(reply.state, "init");
  } catch (e) {
    showError("could not load the debugger state: " + e.message);
  }
}

init();
