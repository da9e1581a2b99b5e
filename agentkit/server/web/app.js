// agentkit's chat page: streams answers from /v1/chat/completions (SSE), shows route, sources and
// quotes, and keeps conversations in the server's session store. No framework, no build step.
// Every text that comes from the server (answers, passages, titles, URIs) goes into the page with
// textContent or createTextNode, never as HTML: a passage may contain markup.
"use strict";

const TOKEN_KEY = "agentkit.token";
const SESSION_KEY = "agentkit.session";
const $ = (id) => document.getElementById(id);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  model: "agentkit",
  sessionsEnabled: false,
  session: sessionStorage.getItem(SESSION_KEY) || "",
  chat: 0, // bumped by newChat: an answer still finishing belongs to the chat it was asked in
  history: [], // complete {role, content} pairs sent with each question
  controller: null, // the AbortController of the answer streaming now
  asking: null, // resolves when the user has given a token
};

// --- small DOM helpers -------------------------------------------------------------------------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue; // no attribute, not the text "null"
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function fmt(x, digits = 2) {
  return typeof x === "number" && Number.isFinite(x) ? x.toFixed(digits) : "–";
}

// A link only for schemes that cannot run script; anything else is shown as text.
function uriNode(uri) {
  if (!uri) return document.createTextNode("–");
  const safe = /^(https?|file):\/\//i.test(uri);
  if (!safe) return document.createTextNode(uri);
  const a = el("a", { text: uri, rel: "noopener noreferrer", target: "_blank" });
  a.href = uri;
  return a;
}

// --- talking to the server ---------------------------------------------------------------------

function askToken(message) {
  if (state.asking) return state.asking;
  const dialog = $("token-dialog");
  $("token-error").textContent = message || "";
  $("token").value = "";
  state.asking = new Promise((resolve) => {
    $("token-form").onsubmit = (event) => {
      event.preventDefault();
      state.token = $("token").value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      dialog.close();
      state.asking = null;
      resolve();
    };
  });
  if (!dialog.open) dialog.showModal();
  $("token").focus();
  return state.asking;
}

// fetch with the token; a 401 asks for the token (again) and retries.
async function api(path, init = {}) {
  for (;;) {
    const headers = new Headers(init.headers || {});
    if (state.token) headers.set("Authorization", "Bearer " + state.token);
    if (init.body !== undefined) headers.set("Content-Type", "application/json");
    const response = await fetch(path, { ...init, headers });
    if (response.status !== 401) return response;
    const refused = state.token ? "the server refused that token; check it and try again" : "";
    sessionStorage.removeItem(TOKEN_KEY);
    state.token = "";
    await askToken(refused);
  }
}

async function json(path, init) {
  const response = await api(path, init);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error((body.error && body.error.message) || `${path}: HTTP ${response.status}`);
  return body;
}

// Server-sent events from a fetch body: calls onData with each decoded `data:` JSON until [DONE].
async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      for (const line of block.split("\n")) {
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") return;
        onData(JSON.parse(data));
      }
    }
  }
}

// --- sources, search and sessions --------------------------------------------------------------

async function loadSources() {
  const info = await json("/extras/sources");
  state.model = info.model;
  state.sessionsEnabled = info.sessions;
  $("model").textContent = `${info.llm} · ${info.sources.length} source${info.sources.length === 1 ? "" : "s"}`;
  const list = $("sources");
  const route = $("route");
  const search = $("search-source");
  list.replaceChildren();
  route.replaceChildren(el("option", { value: "", text: "automatic" }));
  search.replaceChildren();
  for (const s of info.sources) {
    const count = s.count === null ? "count unknown" : `${s.count} passage${s.count === 1 ? "" : "s"}`;
    list.append(el("li", {}, el("strong", { text: s.name }), " ", el("span", { class: "count", text: `(${count})` }),
      s.description ? el("div", { class: "muted small", text: s.description }) : null));
    route.append(el("option", { value: s.name, text: s.name }));
    search.append(el("option", { value: s.name, text: s.name }));
  }
  route.append(el("option", { value: "parametric", text: "parametric (model memory)" }));
  if (!info.sources.length) list.append(el("li", { class: "muted", text: "no sources configured" }));
  $("search").hidden = !info.sources.length;
}

async function runSearch(event) {
  event.preventDefault();
  const query = $("search-query").value.trim();
  const results = $("search-results");
  if (!query) return;
  results.replaceChildren(el("li", { class: "muted", text: "searching…" }));
  try {
    const body = await json("/extras/search", { method: "POST", body: JSON.stringify({ source: $("search-source").value, query, k: 5 }) });
    results.replaceChildren();
    for (const p of body.passages) {
      results.append(el("li", {},
        el("strong", { text: p.title || p.id }), " ", el("span", { class: "muted", text: `score ${fmt(p.score)}` }),
        el("span", { class: "text", text: p.text }), el("span", { class: "small" }, uriNode(p.uri))));
    }
    if (!body.passages.length) results.append(el("li", { class: "muted", text: "nothing found" }));
  } catch (error) {
    results.replaceChildren(el("li", { class: "error", text: error.message }));
  }
}

async function loadSessions() {
  const panel = $("sessions-panel");
  if (!state.sessionsEnabled) {
    $("sessions-note").textContent = "This server keeps no sessions (it was started without a config).";
    return;
  }
  const { sessions } = await json("/extras/sessions");
  const list = $("sessions");
  list.replaceChildren();
  $("sessions-note").textContent = sessions.length ? "" : "No saved sessions yet: each chat here is saved as one.";
  for (const s of sessions) {
    const button = el("button", { type: "button", "data-session": s.name, onclick: () => openSession(s.name) },
      el("span", { text: s.name }), el("span", { class: "muted small", text: ` · ${s.turns} turn${s.turns === 1 ? "" : "s"}` }),
      el("span", { class: "first", text: s.first_question }));
    if (s.name === state.session) button.setAttribute("aria-current", "true");
    list.append(el("li", {}, button));
  }
  panel.hidden = false;
}

async function openSession(name) {
  if (state.controller) state.controller.abort();
  const data = await json("/extras/sessions/" + encodeURIComponent(name));
  newChat();
  state.session = name;
  sessionStorage.setItem(SESSION_KEY, name);
  $("session-name").textContent = `session: ${name}`;
  let question = null;
  for (const m of data.messages) {
    if (m.role === "user") {
      question = m.content;
      addUser(m.content);
    } else if (m.role === "assistant") {
      const view = addAssistant();
      const record = { ...(m.answer || {}), text: m.content };
      finish(view, record, m.complete ? "done" : "stopped");
      if (m.complete && question !== null) state.history.push({ role: "user", content: question }, { role: "assistant", content: m.content });
      question = null;
    }
  }
  for (const b of document.querySelectorAll("#sessions button")) b.toggleAttribute("aria-current", b.dataset.session === name);
  closeSide();
}

// `asked` is {chat, session} as they were when the question was sent: a turn stopped by "New
// chat" or by opening another session is saved where it was asked, not into the chat now shown.
async function saveTurn(question, text, complete, record, asked) {
  if (!state.sessionsEnabled) return;
  const current = asked.chat === state.chat;
  let session = current ? state.session : asked.session;
  if (!session) {
    const now = new Date();
    const pad = (n) => String(n).padStart(2, "0");
    // A random tail: two tabs that start a chat in the same second must not share a session.
    const tail = Array.from(crypto.getRandomValues(new Uint8Array(2)), (b) => b.toString(16).padStart(2, "0")).join("");
    session = `web-${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}-${pad(now.getHours())}${pad(now.getMinutes())}-${tail}`;
    if (current) {
      state.session = session;
      sessionStorage.setItem(SESSION_KEY, session);
      $("session-name").textContent = `session: ${session}`;
    }
  }
  try {
    await json(`/extras/sessions/${encodeURIComponent(session)}/turns`, {
      method: "POST", body: JSON.stringify({ question, answer: text, complete, record }),
    });
    await loadSessions();
  } catch (error) {
    $("sessions-note").textContent = `not saved: ${error.message}`;
  }
}

// --- the conversation --------------------------------------------------------------------------

function addUser(text) {
  $("empty").hidden = true;
  const node = el("div", { class: "msg user" }, el("div", { class: "who", text: "You" }), text);
  $("log").append(node);
  node.scrollIntoView({ block: "end" });
}

function addAssistant() {
  $("empty").hidden = true;
  const view = {
    root: el("div", { class: "msg assistant", "data-state": "streaming" }),
    route: el("div", { class: "route" }),
    reasoning: el("details", { class: "reasoning", hidden: "" }, el("summary", { text: "Reasoning" }), el("pre")),
    answer: el("div", { class: "answer" }),
    notes: el("div", { class: "notes" }),
    sources: el("ol", { class: "sources", "aria-label": "Sources" }),
  };
  view.root.append(el("div", { class: "who", text: "agentkit" }), view.route, view.reasoning, view.answer, view.notes, view.sources);
  $("log").append(view.root);
  return view;
}

function showRoute(view, route) {
  if (!route) return;
  const targets = (route.targets || []).join(" + ") || "none";
  view.route.replaceChildren("Route: ", el("strong", { text: targets }), ` · confidence ${fmt(route.confidence)}`,
    route.reason ? ` · ${route.reason}` : "");
}

function showReasoning(view, text) {
  view.reasoning.hidden = !text;
  view.reasoning.querySelector("pre").textContent = text || "";
}

// The answer text with each [n] as a button that opens its passage.
function renderAnswer(view, text, record) {
  view.answer.replaceChildren();
  const parts = text.split(/(\[\d+\])/);
  for (const part of parts) {
    const mark = /^\[(\d+)\]$/.exec(part);
    const n = mark ? Number(mark[1]) : 0;
    if (mark && findPassage(record, n)) {
      view.answer.append(el("button", { type: "button", class: "cite", "data-n": String(n), "aria-label": `source ${n}`,
        onclick: () => openPassage(record, n) }, part));
    } else if (part) {
      view.answer.append(document.createTextNode(part));
    }
  }
}

// The citation and evidence behind [n]: the citation's passage, else the n-th passage shown.
function findPassage(record, n) {
  const citations = record.citations || [];
  const evidence = record.evidence || [];
  const citation = citations.find((c) => c.marker === n) || null;
  const id = citation ? citation.passage_id : (record.passages || [])[n - 1];
  const passage = evidence.find((p) => p.id === id) || null;
  if (!citation && !passage) return null;
  return { citation, passage };
}

function notice(kind, label, text) {
  return el("div", { class: `notice ${kind}`, role: kind === "warning" ? "note" : null }, el("strong", { text: label }), text);
}

function finish(view, record, status) {
  view.root.dataset.state = status;
  showRoute(view, record.route);
  showReasoning(view, record.reasoning || view.reasoning.querySelector("pre").textContent);
  renderAnswer(view, record.text || "", record);
  view.notes.replaceChildren();
  if (status === "stopped") view.notes.append(el("div", { class: "stopped", text: "Stopped: the answer was cut off here." }));
  if (record.withheld) {
    const why = record.kind === "extractive"
      ? "the model's answer did not hold up against its quote, so the source sentence is shown instead"
      : "no source supported it";
    view.notes.append(notice("withheld", "Withheld:", ` “${record.withheld}”: ${why}.`));
  }
  for (const w of record.warnings || []) view.notes.append(notice("warning", "Warning:", " " + w));
  if (record.from_memory && record.kind === "memory") view.notes.append(el("div", { class: "muted small", text: "From the model's own knowledge: no source was consulted." }));
  if (record.timings && record.timings.total_ms) view.notes.append(el("div", { class: "muted small", text: `${Math.round(record.timings.total_ms)} ms` }));
  view.sources.replaceChildren();
  const cited = new Set((record.citations || []).map((c) => c.passage_id));
  const numbered = (record.passages || []).map((id, i) => [i + 1, id]);
  for (const c of record.citations || []) {
    if (!numbered.some(([, id]) => id === c.passage_id)) numbered.push([c.marker, c.passage_id]);
  }
  for (const [n, id] of numbered) {
    const p = (record.evidence || []).find((e) => e.id === id) || (record.citations || []).find((c) => c.passage_id === id) || { id };
    const open = el("button", { type: "button", class: "cite", "data-n": String(n), onclick: () => openPassage(record, n) }, `[${n}]`);
    view.sources.append(el("li", {}, open, " ", el("span", { text: p.title || id }),
      el("span", { class: "muted small", text: p.source ? ` — ${p.source}` : "" }),
      cited.has(id) ? el("span", { class: "tag", text: "cited" }) : null));
  }
}

// The passage behind [n], its quote highlighted; offsets are Python's, counted in code points.
function openPassage(record, n) {
  const found = findPassage(record, n);
  if (!found) return;
  const { citation, passage } = found;
  const c = citation || {};
  const p = passage || { id: c.passage_id, title: c.title, uri: c.uri, source: c.source, text: "" };
  $("passage-title").textContent = `[${n}] ${p.title || p.id}`;
  $("passage-source").textContent = `${p.source || c.source || "–"} · ${p.id}`;
  $("passage-uri").replaceChildren(uriNode(p.uri || c.uri));
  let support = "not checked";
  if (typeof c.support === "number") support = `${fmt(c.support)} (${c.supported === false ? "not supported" : c.supported ? "supported" : "unchecked"})`;
  if (c.inferred) support += " · attributed by word overlap, no [n] written";
  $("passage-support").textContent = citation ? support : "not cited";
  $("passage-sentence").textContent = c.sentence || "–";
  const box = $("passage-text");
  box.replaceChildren();
  const text = p.text || "";
  const chars = Array.from(text);
  let start = Number.isInteger(c.start) ? c.start : -1;
  let end = Number.isInteger(c.end) ? c.end : -1;
  let note = "";
  if (!(start >= 0 && end > start && chars.slice(start, end).join("") === c.quote)) {
    const at = c.quote ? text.indexOf(c.quote) : -1;
    start = at < 0 ? -1 : Array.from(text.slice(0, at)).length;
    end = at < 0 ? -1 : start + Array.from(c.quote).length;
  }
  if (start >= 0) {
    box.append(chars.slice(0, start).join(""), el("mark", { text: chars.slice(start, end).join("") }), chars.slice(end).join(""));
    note = "The highlighted span is the quote the answer rests on.";
  } else {
    box.append(text || c.quote || "");
    note = text ? "No exact quote was located in this passage." : "Only the quote was saved with this session.";
    if (!text && c.quote) box.replaceChildren(el("mark", { text: c.quote }));
  }
  $("passage-note").textContent = note;
  const panel = $("passage");
  panel.hidden = false;
  panel.focus();
}

function closePassage() {
  $("passage").hidden = true;
}

async function send() {
  const input = $("question");
  const question = input.value.trim();
  if (!question || state.controller) return;
  input.value = "";
  addUser(question);
  const view = addAssistant();
  const controller = new AbortController();
  state.controller = controller;
  const asked = { chat: state.chat, session: state.session };
  $("stop").hidden = false;
  $("send").disabled = true;
  const route = $("route").value;
  const body = { model: state.model, stream: true, messages: [...state.history, { role: "user", content: question }] };
  if (route) body.agentkit = { route: [route] };
  let content = "";
  let reasoning = "";
  const extra = {};
  let status = "done";
  try {
    const response = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(body), signal: controller.signal });
    if (!response.ok) {
      const error = await response.json().catch(() => ({}));
      throw new Error((error.error && error.error.message) || `HTTP ${response.status}`);
    }
    await readEvents(response, (chunk) => {
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.agentkit) {
        Object.assign(extra, chunk.agentkit);
        showRoute(view, extra.route);
      }
      for (const choice of chunk.choices || []) {
        const delta = choice.delta || {};
        if (delta.reasoning_content) {
          reasoning += delta.reasoning_content;
          showReasoning(view, reasoning);
          view.reasoning.open = !content;
        }
        if (delta.content) {
          content += delta.content;
          view.reasoning.open = false;
          view.answer.textContent = content;
        }
      }
      view.answer.scrollIntoView({ block: "end" });
    });
  } catch (error) {
    if (error.name === "AbortError") {
      status = "stopped";
    } else {
      status = "error";
      view.notes.append(el("p", { class: "error", text: error.message }));
    }
  } finally {
    state.controller = null;
    $("stop").hidden = true;
    $("send").disabled = false;
  }
  if (status === "error") {
    view.root.dataset.state = "error";
    return;
  }
  if (status === "stopped") {
    const record = { route: extra.route, reasoning, warnings: ["stopped from the page before the answer was complete"], text: content };
    finish(view, { ...record, warnings: [] }, "stopped");
    await saveTurn(question, content, false, record, asked);
  } else {
    const record = { ...extra, reasoning: extra.reasoning || reasoning, text: extra.text ?? content };
    finish(view, record, "done");
    if (asked.chat === state.chat) state.history.push({ role: "user", content: question }, { role: "assistant", content: record.text });
    const { text, ...saved } = record;
    await saveTurn(question, text, true, saved, asked);
  }
  input.focus();
}

function stop() {
  if (state.controller) state.controller.abort();
}

function newChat() {
  stop();
  state.chat += 1;
  state.history = [];
  state.session = "";
  sessionStorage.removeItem(SESSION_KEY);
  $("session-name").textContent = "";
  $("log").replaceChildren();
  $("empty").hidden = false;
  closePassage();
  for (const b of document.querySelectorAll("#sessions button")) b.removeAttribute("aria-current");
}

function closeSide() {
  $("side").classList.remove("open");
  $("menu").setAttribute("aria-expanded", "false");
}

// --- wiring ------------------------------------------------------------------------------------

function wire() {
  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send();
  });
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send();
    }
  });
  document.addEventListener("keydown", (event) => {
    if (event.key !== "Escape" || $("token-dialog").open) return;
    if (state.controller) stop();
    else if (!$("passage").hidden) closePassage();
    else closeSide();
  });
  $("stop").addEventListener("click", stop);
  $("passage-close").addEventListener("click", closePassage);
  $("new-chat").addEventListener("click", () => {
    newChat();
    $("question").focus();
  });
  $("search").addEventListener("submit", runSearch);
  $("menu").addEventListener("click", () => {
    const open = $("side").classList.toggle("open");
    $("menu").setAttribute("aria-expanded", String(open));
  });
  // The dialog must not close without a token: Esc would leave the page unable to do anything.
  $("token-dialog").addEventListener("cancel", (event) => event.preventDefault());
}

async function start() {
  wire();
  try {
    await loadSources();
    await loadSessions();
    if (state.session && state.sessionsEnabled) await openSession(state.session).catch(() => newChat());
  } catch (error) {
    $("empty").replaceChildren(el("span", { class: "error", text: error.message }));
  }
  document.body.dataset.ready = "true";
  $("question").focus();
}

start();
