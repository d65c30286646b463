// llmrelay playground (SPEC 11). Plain script, no build step, no other host.
// Every string a model or an upstream wrote goes into the page as a text node (textContent / createTextNode):
// nothing here parses a string as HTML, so no answer can run script or load anything.
"use strict";

(() => {
  const KEY_STORE = "llmrelay.gateway-key"; // sessionStorage only
  const SETTINGS_STORE = "llmrelay.playground"; // localStorage: model choices and sampling only (no prompt, no key)
  const CHAT_PATH = "/v1/chat/completions";
  const BURST_S = 0.05; // an answer that arrived within this is a burst (a cache hit): no rate to show

  const $ = (id) => document.getElementById(id);
  const ui = {
    conversation: $("conversation"), empty: $("empty"), composer: $("composer"), message: $("message"),
    send: $("send"), stop: $("stop"), clear: $("clear"), system: $("system"), temperature: $("temperature"),
    maxTokens: $("max-tokens"), compare: $("compare"), compareModels: $("compare-models"),
    models: [$("model-0"), $("model-1"), $("model-2")], modelsStatus: $("models-status"),
    keyDialog: $("key-dialog"), keyForm: $("key-form"), enterKey: $("enter-key"), keyInput: $("gateway-key"),
    keyReason: $("key-reason"), keyState: $("key-state"), forgetKey: $("forget-key"), settings: $("settings"), settingsToggle: $("settings-toggle"),
  };
  const state = { turns: [], running: new Set(), awaitingKey: [], modelsLoaded: false, needsKey: false };

  // ------------------------------------------------------------------ small DOM helpers

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function button(label, onClick, className) {
    const node = el("button", className || "small", label);
    node.type = "button";
    node.addEventListener("click", onClick);
    return node;
  }

  function nearBottom() {
    const c = ui.conversation;
    return c.scrollHeight - c.scrollTop - c.clientHeight < 80;
  }

  function follow(wasNear) {
    if (wasNear) ui.conversation.scrollTop = ui.conversation.scrollHeight;
  }

  // ------------------------------------------------------------------ the gateway key (sessionStorage only)

  let pageKey = ""; // used only when the browser refuses sessionStorage: then the key lasts as long as the page

  function gatewayKey() {
    try { return sessionStorage.getItem(KEY_STORE) || ""; } catch { return pageKey; }
  }

  function setGatewayKey(key) {
    pageKey = key;
    try {
      if (key) sessionStorage.setItem(KEY_STORE, key); else sessionStorage.removeItem(KEY_STORE);
    } catch { /* storage refused: pageKey holds it */ }
    ui.keyState.hidden = ui.forgetKey.hidden = !key;
    ui.enterKey.hidden = Boolean(key) || !state.needsKey;
  }

  function authHeaders() {
    const key = gatewayKey();
    return key ? { Authorization: "Bearer " + key } : {};
  }

  function askForKey(reason) {
    state.needsKey = true;
    ui.enterKey.hidden = false;
    ui.keyReason.textContent = reason || "";
    if (!ui.keyDialog.open) ui.keyDialog.showModal(); // modal: focus stays in it until a key is given or Escape
    ui.keyInput.focus();
  }

  ui.enterKey.addEventListener("click", () => askForKey(ui.keyReason.textContent));

  ui.keyForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = ui.keyInput.value.trim();
    if (!key) return;
    setGatewayKey(key);
    ui.keyInput.value = "";
    ui.keyDialog.close();
    if (!state.modelsLoaded) loadModels();
    const waiting = state.awaitingKey.splice(0);
    for (const answer of waiting) { resetAnswer(answer); run(answer); }
    ui.message.focus();
  });

  ui.forgetKey.addEventListener("click", () => { setGatewayKey(""); ui.message.focus(); });

  // ------------------------------------------------------------------ errors

  async function errorOf(response) {
    // The error body's message (SPEC 8.4), else the start of whatever came back.
    let text = "";
    try { text = await response.text(); } catch { /* body lost */ }
    let message = text.slice(0, 500) || response.statusText || "no message";
    let code = "";
    try {
      const body = JSON.parse(text);
      if (body && body.error) {
        if (typeof body.error.message === "string") message = body.error.message;
        if (typeof body.error.code === "string") code = body.error.code;
      }
    } catch { /* not JSON: keep the text */ }
    return { status: response.status, message, code };
  }

  // ------------------------------------------------------------------ models

  async function loadModels() {
    ui.modelsStatus.textContent = "Loading models…";
    let response;
    try {
      response = await fetch("/v1/models", { headers: authHeaders() });
    } catch (error) {
      ui.modelsStatus.textContent = "Could not reach the gateway: " + error.message;
      return;
    }
    if (!response.ok) {
      const error = await errorOf(response);
      ui.modelsStatus.textContent = "Models: " + error.message;
      if (response.status === 401) {
        ui.modelsStatus.textContent = "Enter the gateway key to list the models.";
        setGatewayKey("");
        askForKey(error.message);
      }
      return;
    }
    let listing;
    try { listing = await response.json(); } catch { listing = null; }
    const data = listing && Array.isArray(listing.data) ? listing.data : [];
    const items = data.filter((m) => m && typeof m.id === "string");
    const routes = items.filter((m) => m.owned_by === "llmrelay");
    const others = items.filter((m) => m.owned_by !== "llmrelay");
    fillModels(routes, others);
    state.modelsLoaded = true;
    ui.modelsStatus.textContent = items.length
      ? `${items.length} model${items.length === 1 ? "" : "s"}: ${routes.length} route${routes.length === 1 ? "" : "s"} first`
      : "This gateway lists no models.";
  }

  function fillModels(routes, others) {
    const groups = [];
    if (routes.length) groups.push(["Routes", routes]);
    const byOwner = new Map();
    for (const m of others) {
      const owner = typeof m.owned_by === "string" ? m.owned_by : "other";
      if (!byOwner.has(owner)) byOwner.set(owner, []);
      byOwner.get(owner).push(m);
    }
    for (const [owner, list] of byOwner) groups.push([owner, list]);
    const ids = [...routes, ...others].map((m) => m.id);
    const saved = loadSettings().models || [];
    ui.models.forEach((select, slot) => {
      select.replaceChildren();
      if (slot === 2) select.append(new Option("— none —", ""));
      for (const [label, list] of groups) {
        const group = el("optgroup");
        group.label = label;
        for (const m of list) group.append(new Option(m.id, m.id));
        select.append(group);
      }
      const fallback = slot === 2 ? "" : ids[Math.min(slot, ids.length - 1)] || "";
      select.value = ids.includes(saved[slot]) ? saved[slot] : fallback;
    });
  }

  function chosenModels() {
    const chosen = [ui.models[0].value];
    if (ui.compare.checked) chosen.push(ui.models[1].value, ui.models[2].value);
    return chosen.filter(Boolean);
  }

  // ------------------------------------------------------------------ settings

  function loadSettings() {
    try { return JSON.parse(localStorage.getItem(SETTINGS_STORE) || "{}") || {}; } catch { return {}; }
  }

  function saveSettings() {
    const settings = {
      models: ui.models.map((s) => s.value), compare: ui.compare.checked, temperature: ui.temperature.value, maxTokens: ui.maxTokens.value,
    };
    try { localStorage.setItem(SETTINGS_STORE, JSON.stringify(settings)); } catch { /* not kept */ }
  }

  function restoreSettings() {
    const s = loadSettings();
    ui.compare.checked = Boolean(s.compare);
    ui.compareModels.hidden = !ui.compare.checked;
    if (typeof s.temperature === "string") ui.temperature.value = s.temperature;
    if (typeof s.maxTokens === "string") ui.maxTokens.value = s.maxTokens;
  }

  for (const node of [...ui.models, ui.temperature, ui.maxTokens]) {
    node.addEventListener("change", saveSettings);
  }
  ui.compare.addEventListener("change", () => {
    ui.compareModels.hidden = !ui.compare.checked;
    saveSettings();
  });
  function showSettings(open) { // on a narrow screen the settings fold away behind the Settings button
    ui.settings.classList.toggle("open", open);
    ui.settingsToggle.setAttribute("aria-expanded", String(open));
    if (open) ui.models[0].focus();
  }
  ui.settingsToggle.addEventListener("click", () => showSettings(!ui.settings.classList.contains("open")));

  // ------------------------------------------------------------------ the request

  function numberSetting(input, parse) {
    if (input.value === "" || !input.checkValidity()) return undefined;
    const value = parse(input.value);
    return Number.isFinite(value) ? value : undefined;
  }

  function history(slot, userText) {
    const messages = [];
    const system = ui.system.value.trim();
    if (system) messages.push({ role: "system", content: system });
    for (const turn of state.turns) {
      const answer = turn.answers[slot] || turn.answers[0];
      if (!answer || !answer.text) continue; // a turn without an answer is left out
      messages.push({ role: "user", content: turn.user }, { role: "assistant", content: answer.text });
    }
    messages.push({ role: "user", content: userText });
    return messages;
  }

  function buildRequest(model, messages) {
    const request = { model, messages };
    const temperature = numberSetting(ui.temperature, parseFloat);
    const maxTokens = numberSetting(ui.maxTokens, (v) => parseInt(v, 10));
    if (temperature !== undefined) request.temperature = temperature;
    if (maxTokens !== undefined) request.max_tokens = maxTokens;
    request.stream = true;
    request.stream_options = { include_usage: true };
    return request;
  }

  // ------------------------------------------------------------------ a turn and its answers

  function send() {
    const text = ui.message.value;
    if (!text.trim() || state.running.size) return;
    const models = chosenModels();
    if (!models.length) {
      ui.modelsStatus.textContent = "Choose a model first.";
      showSettings(true);
      return;
    }
    for (const field of [ui.temperature, ui.maxTokens]) {
      if (!field.checkValidity()) { field.reportValidity(); return; }
    }
    ui.empty.hidden = true;
    const turn = { user: text, answers: [] };
    const section = el("section", "turn");
    const user = el("div", "user-msg");
    user.append(el("div", "bubble", text));
    const grid = el("div", `answers cols-${models.length}`);
    section.append(user, grid);
    ui.conversation.append(section);
    models.forEach((model, slot) => {
      const answer = newAnswer(model, buildRequest(model, history(slot, text)), models.length > 1);
      turn.answers.push(answer);
      grid.append(answer.node);
    });
    state.turns.push(turn);
    ui.message.value = "";
    follow(true);
    for (const answer of turn.answers) run(answer);
  }

  function figure(list, label, className) {
    const item = el("div", "figure");
    const value = el("dd", className, "—");
    item.append(el("dt", "", label), value);
    list.append(item);
    return value;
  }

  function newAnswer(model, request, compared) {
    const node = el("article", "answer");
    node.dataset.state = "waiting";
    const head = el("header", "answer-head");
    const title = el(compared ? "h3" : "span", "answer-model", model);
    const status = el("span", "answer-state", "waiting…");
    head.append(title, status);
    const whoLine = el("p", "answer-who", "answered by ");
    const who = el("span", "fig-who", "—");
    whoLine.append(who);
    whoLine.hidden = true;
    const reasoning = el("details", "reasoning");
    reasoning.hidden = true;
    const reasoningSummary = el("summary", "", "Reasoning");
    const reasoningText = el("div", "reasoning-text");
    reasoning.append(reasoningSummary, reasoningText);
    const body = el("div", "answer-body");
    const error = el("p", "answer-error");
    error.hidden = true;
    error.setAttribute("role", "alert");
    const figures = el("dl", "figures");
    const answer = {
      model, request, node, status, reasoning, reasoningSummary, reasoningText, body, error,
      who, whoLine,
      ttft: figure(figures, "first token", "fig-ttft"),
      tps: figure(figures, "tokens/s", "fig-tps"),
      tokens: figure(figures, "tokens", "fig-tokens"),
      total: figure(figures, "total", "fig-total"),
    };
    const tools = el("div", "answer-tools");
    answer.codeButton = button("Code", () => toggleCode(answer));
    answer.codeButton.setAttribute("aria-expanded", "false");
    answer.plainButton = button("Plain text", () => togglePlain(answer));
    answer.plainButton.setAttribute("aria-pressed", "false");
    answer.plainButton.disabled = true;
    answer.copyButton = button("Copy", () => copy(answer.copyButton, answer.text));
    answer.copyButton.disabled = true;
    tools.append(answer.codeButton, answer.plainButton, answer.copyButton);
    const foot = el("footer", "answer-foot");
    foot.append(figures, tools);
    answer.code = el("div", "code-view");
    answer.code.hidden = true;
    node.append(head, whoLine, reasoning, body, error, foot, answer.code);
    resetAnswer(answer);
    return answer;
  }

  function resetAnswer(answer) {
    Object.assign(answer, {
      text: "", reasoningRaw: "", pieces: 0, usage: null, finished: false, failed: false, plain: false,
      started: 0, first: 0, ended: 0,
    });
    answer.stream = document.createTextNode("");
    const live = el("div", "stream-text");
    live.append(answer.stream);
    answer.body.replaceChildren(live);
    answer.reasoningText.replaceChildren();
    answer.reasoning.hidden = true;
    answer.error.hidden = true;
    answer.error.replaceChildren();
    for (const name of ["who", "ttft", "tps", "tokens", "total"]) answer[name].textContent = "—";
    answer.whoLine.hidden = true;
    answer.plainButton.disabled = answer.copyButton.disabled = true;
    answer.plainButton.setAttribute("aria-pressed", "false");
    setState(answer, "waiting", "waiting…");
    if (!answer.code.hidden) fillCode(answer);
  }

  function setState(answer, name, label) {
    answer.node.dataset.state = name;
    answer.status.textContent = label;
  }

  function updateButtons() {
    const busy = state.running.size > 0;
    ui.stop.disabled = !busy;
    ui.send.disabled = busy;
  }

  // ------------------------------------------------------------------ streaming

  async function run(answer) {
    const controller = new AbortController();
    answer.controller = controller;
    state.running.add(answer);
    updateButtons();
    answer.started = performance.now();
    try {
      const response = await fetch(CHAT_PATH, {
        method: "POST",
        headers: { "Content-Type": "application/json", ...authHeaders() },
        body: JSON.stringify(answer.request),
        signal: controller.signal,
      });
      showWho(answer, response.headers);
      if (!response.ok) {
        const error = await errorOf(response);
        fail(answer, error);
        if (response.status === 401) {
          setGatewayKey("");
          state.awaitingKey.push(answer);
          askForKey(error.message);
        }
        return;
      }
      setState(answer, "streaming", "streaming…");
      await readEvents(answer, response.body.getReader());
      if (!answer.finished && !answer.failed) {
        fail(answer, { message: "the stream ended before [DONE]: the answer may be cut short" });
      }
    } catch (error) {
      if (error && error.name === "AbortError") stopped(answer);
      else fail(answer, { message: "network error: " + (error && error.message) });
    } finally {
      state.running.delete(answer);
      updateButtons();
    }
  }

  function showWho(answer, headers) {
    const decode = (value) => {
      try { return decodeURIComponent(value); } catch { return value; }
    };
    const provider = headers.get("x-llmrelay-provider");
    const model = headers.get("x-llmrelay-model");
    if (!provider && !model) return;
    let who = [provider, model].filter(Boolean).map(decode).join(" · ");
    if (headers.get("x-llmrelay-cache") === "hit") who += " (cache)";
    answer.who.textContent = who;
    answer.whoLine.hidden = false;
  }

  async function readEvents(answer, reader) {
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        onEvent(answer, event);
        if (answer.finished || answer.failed) { reader.cancel().catch(() => {}); return; }
      }
    }
    buffer += decoder.decode();
    if (buffer.trim()) onEvent(answer, buffer);
  }

  function onEvent(answer, event) {
    const data = [];
    for (const line of event.split("\n")) {
      if (line.startsWith("data:")) data.push(line.slice(line.startsWith("data: ") ? 6 : 5));
    }
    if (!data.length) return; // a comment (": keep-alive") or a field the page does not use
    const payload = data.join("\n");
    if (payload === "[DONE]") { finish(answer); return; }
    let chunk;
    try { chunk = JSON.parse(payload); } catch {
      fail(answer, { message: "the gateway sent an event that is not JSON" });
      return;
    }
    if (!chunk || typeof chunk !== "object") return;
    if (chunk.error) {
      fail(answer, { message: String(chunk.error.message || "the stream failed"), code: chunk.error.code });
      return;
    }
    if (chunk.usage) answer.usage = chunk.usage;
    const choices = Array.isArray(chunk.choices) ? chunk.choices : [];
    for (const choice of choices) {
      const delta = (choice && choice.delta) || {};
      if (typeof delta.reasoning_content === "string" && delta.reasoning_content) addReasoning(answer, delta.reasoning_content);
      if (typeof delta.content === "string" && delta.content) addText(answer, delta.content);
      if (Array.isArray(delta.tool_calls)) addToolCalls(answer, delta.tool_calls);
    }
  }

  function firstPiece(answer) {
    if (answer.first) return;
    answer.first = performance.now();
    answer.ttft.textContent = duration(answer.first - answer.started);
  }

  function addReasoning(answer, piece) {
    const wasNear = nearBottom();
    firstPiece(answer);
    if (answer.reasoning.hidden) {
      answer.reasoning.hidden = false;
      answer.reasoningSummary.textContent = "Reasoning (thinking…)";
    }
    answer.reasoningRaw += piece;
    answer.reasoningText.append(document.createTextNode(piece));
    countPiece(answer);
    follow(wasNear);
  }

  function addText(answer, piece) {
    const wasNear = nearBottom();
    firstPiece(answer);
    if (!answer.text) answer.reasoningSummary.textContent = "Reasoning";
    answer.text += piece;
    answer.stream.appendData(piece); // each piece appended as it arrives
    countPiece(answer);
    follow(wasNear);
  }

  function addToolCalls(answer, calls) {
    for (const call of calls) {
      const fn = (call && call.function) || {};
      const piece = (fn.name ? `\n[tool call ${fn.name}] ` : "") + (typeof fn.arguments === "string" ? fn.arguments : "");
      if (piece) addText(answer, piece);
    }
  }

  function countPiece(answer) {
    answer.pieces += 1;
    const seconds = (performance.now() - answer.first) / 1000;
    answer.tps.textContent = answer.pieces > 1 && seconds >= BURST_S ? rate((answer.pieces - 1) / seconds) : "—";
  }

  function finish(answer) {
    answer.finished = true;
    answer.ended = performance.now();
    answer.reasoningSummary.textContent = "Reasoning";
    answer.total.textContent = duration(answer.ended - answer.started);
    const usage = answer.usage;
    if (usage) {
      const parts = [];
      if (Number.isFinite(usage.prompt_tokens)) parts.push(`${usage.prompt_tokens} in`);
      if (Number.isFinite(usage.completion_tokens)) parts.push(`${usage.completion_tokens} out`);
      if (parts.length) answer.tokens.textContent = parts.join(" · ");
      const seconds = (answer.ended - answer.first) / 1000;
      if (answer.first && Number.isFinite(usage.completion_tokens) && seconds >= BURST_S) {
        answer.tps.textContent = rate(usage.completion_tokens / seconds);
      }
    }
    showMarkdown(answer);
    setState(answer, "done", "done");
  }

  function stopped(answer) {
    if (answer.finished || answer.failed) return;
    answer.ended = performance.now();
    answer.total.textContent = duration(answer.ended - answer.started);
    answer.reasoningSummary.textContent = "Reasoning";
    if (answer.text) showMarkdown(answer);
    setState(answer, "stopped", "stopped");
  }

  function fail(answer, error) {
    if (answer.failed) return;
    answer.failed = true;
    answer.ended = performance.now();
    answer.reasoningSummary.textContent = "Reasoning";
    const parts = [el("strong", "", "Error: "), document.createTextNode(error.message)];
    const detail = [error.status ? `HTTP ${error.status}` : "", error.code || ""].filter(Boolean).join(", ");
    if (detail) parts.push(el("span", "muted", ` (${detail})`));
    answer.error.replaceChildren(...parts);
    answer.error.hidden = false;
    if (answer.text) showMarkdown(answer);
    setState(answer, "error", "failed");
  }

  function showMarkdown(answer) {
    answer.plain = false;
    answer.body.replaceChildren(renderMarkdown(answer.text));
    answer.plainButton.disabled = answer.copyButton.disabled = !answer.text;
    answer.plainButton.setAttribute("aria-pressed", "false");
  }

  function togglePlain(answer) {
    answer.plain = !answer.plain;
    answer.plainButton.setAttribute("aria-pressed", String(answer.plain));
    if (answer.plain) answer.body.replaceChildren(el("div", "plain-text", answer.text));
    else answer.body.replaceChildren(renderMarkdown(answer.text));
  }

  function copy(node, text) {
    const done = (label) => {
      node.textContent = label;
      setTimeout(() => { node.textContent = "Copy"; }, 1200);
    };
    if (!navigator.clipboard) { done("Copy failed"); return; }
    navigator.clipboard.writeText(text).then(() => done("Copied"), () => done("Copy failed"));
  }

  function duration(ms) {
    return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  function rate(perSecond) {
    return perSecond >= 100 ? perSecond.toFixed(0) : perSecond.toFixed(1);
  }

  // ------------------------------------------------------------------ the code view

  function toggleCode(answer) {
    const open = answer.code.hidden;
    answer.code.hidden = !open;
    answer.codeButton.setAttribute("aria-expanded", String(open));
    if (open) fillCode(answer);
  }

  function fillCode(answer) {
    const keyed = Boolean(gatewayKey());
    const blocks = [["curl", curlOf(answer.request, keyed)], ["Python", pythonOf(answer.request, keyed)]];
    const tabs = el("div", "code-tabs");
    tabs.setAttribute("role", "tablist");
    tabs.setAttribute("aria-label", "This request as code (without the key)");
    const panels = blocks.map(([label, source], n) => {
      const pre = el("pre", "code");
      pre.append(el("code", "", source));
      pre.tabIndex = 0;
      pre.setAttribute("role", "tabpanel");
      pre.setAttribute("aria-label", label);
      return pre;
    });
    const tabButtons = blocks.map(([label], n) => {
      const tab = button(label, () => select(n), "small tab");
      tab.setAttribute("role", "tab");
      return tab;
    });
    const copyButton = button("Copy", () => copy(copyButton, blocks[answer.codeTab || 0][1]), "small copy-code");
    copyButton.setAttribute("aria-label", "Copy this code");
    function select(n) {
      answer.codeTab = n;
      tabButtons.forEach((tab, i) => tab.setAttribute("aria-selected", String(i === n)));
      panels.forEach((panel, i) => { panel.hidden = i !== n; });
    }
    tabs.append(...tabButtons, copyButton);
    answer.code.replaceChildren(tabs, ...panels);
    select(answer.codeTab || 0);
  }

  function shellQuote(text) {
    return "'" + text.replace(/'/g, "'\\''") + "'";
  }

  function inlineJson(value) {
    if (Array.isArray(value)) return "[" + value.map(inlineJson).join(", ") + "]";
    if (value && typeof value === "object") {
      return "{" + Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${inlineJson(v)}`).join(", ") + "}";
    }
    return JSON.stringify(value);
  }

  function inlinePython(value) {
    if (value === null || value === undefined) return "None";
    if (value === true) return "True";
    if (value === false) return "False";
    if (Array.isArray(value)) return "[" + value.map(inlinePython).join(", ") + "]";
    if (typeof value === "object") {
      return "{" + Object.entries(value).map(([k, v]) => `${JSON.stringify(k)}: ${inlinePython(v)}`).join(", ") + "}";
    }
    return JSON.stringify(value); // a number, or a string: a JSON string is a valid Python literal
  }

  function curlOf(request, keyed) {
    const fields = Object.entries(request).map(([name, value]) => {
      const shown = name === "messages"
        ? "[\n" + value.map((m) => "    " + inlineJson(m)).join(",\n") + "\n  ]"
        : inlineJson(value);
      return `  ${JSON.stringify(name)}: ${shown}`;
    });
    const body = "{\n" + fields.join(",\n") + "\n}";
    const lines = [`curl -N ${shellQuote(location.origin + CHAT_PATH)}`, `-H 'Content-Type: application/json'`];
    if (keyed) lines.push(`-H "Authorization: Bearer $LLMRELAY_KEY"`);
    lines.push(`-d ${shellQuote(body)}`);
    return lines.join(" \\\n  ");
  }

  function pythonOf(request, keyed) {
    const args = Object.entries(request).map(([name, value]) => name === "messages"
      ? "    messages=[\n" + value.map((m) => `        ${inlinePython(m)},\n`).join("") + "    ],"
      : `    ${name}=${inlinePython(value)},`);
    return [
      ...(keyed ? ["import os", ""] : []),
      "from openai import OpenAI",
      "",
      `client = OpenAI(base_url=${JSON.stringify(location.origin + "/v1")}, ` +
        `api_key=${keyed ? 'os.environ["LLMRELAY_KEY"]' : '"unused"'})`,
      "stream = client.chat.completions.create(",
      ...args,
      ")",
      "for chunk in stream:",
      "    if chunk.choices and chunk.choices[0].delta.content:",
      '        print(chunk.choices[0].delta.content, end="", flush=True)',
      "    if chunk.usage:",
      "        print()",
      "        print(chunk.usage)",
    ].join("\n");
  }

  // ------------------------------------------------------------------ Markdown: text nodes and a few elements

  const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
  const HEADING = /^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
  const RULE = /^ {0,3}([-*_])(\s*\1){2,}\s*$/;
  const QUOTE = /^ {0,3}> ?/;
  const ITEM = /^(\s*)([-*+]|\d{1,9}[.)])\s+(.*)$/;
  const TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

  function renderMarkdown(source) {
    const root = el("div", "markdown");
    renderBlocks(source.split("\n"), root);
    return root;
  }

  function startsBlock(line) {
    return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || ITEM.test(line);
  }

  function renderBlocks(lines, parent) {
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      let m;
      if (!line.trim()) { i += 1; continue; }
      if ((m = FENCE.exec(line))) { i = codeBlock(lines, i, m, parent); continue; }
      if ((m = HEADING.exec(line))) {
        const h = el(`h${Math.min(6, m[1].length + 2)}`);
        inline(m[2], h);
        parent.append(h);
        i += 1;
        continue;
      }
      if (RULE.test(line)) { parent.append(el("hr")); i += 1; continue; }
      if (QUOTE.test(line)) {
        const inner = [];
        while (i < lines.length && lines[i].trim() && (QUOTE.test(lines[i]) || !startsBlock(lines[i]))) {
          inner.push(lines[i].replace(QUOTE, ""));
          i += 1;
        }
        const quote = el("blockquote");
        renderBlocks(inner, quote);
        parent.append(quote);
        continue;
      }
      if ((m = ITEM.exec(line))) { i = list(lines, i, parent); continue; }
      if (line.includes("|") && i + 1 < lines.length && TABLE_RULE.test(lines[i + 1]) && lines[i + 1].includes("-")) {
        i = table(lines, i, parent);
        continue;
      }
      const text = [];
      while (i < lines.length && lines[i].trim() && (!text.length || !startsBlock(lines[i]))) {
        text.push(lines[i].trim());
        i += 1;
      }
      const p = el("p");
      inline(text.join("\n"), p);
      parent.append(p);
    }
  }

  function codeBlock(lines, i, m, parent) {
    const fence = m[1];
    const body = [];
    i += 1;
    while (i < lines.length && !(lines[i].trim().startsWith(fence) && /^[`~]+$/.test(lines[i].trim()))) {
      body.push(lines[i]);
      i += 1;
    }
    const pre = el("pre", "code");
    pre.tabIndex = 0; // a long line scrolls inside the block: reachable by keyboard
    const code = el("code", "", body.join("\n"));
    if (m[2]) pre.dataset.lang = m[2].slice(0, 30);
    pre.append(code);
    parent.append(pre);
    return i + 1; // past the closing fence (or the end of an unclosed block)
  }

  function list(lines, i, parent) {
    const first = ITEM.exec(lines[i]);
    const indent = first[1].length;
    const ordered = /\d/.test(first[2]);
    const node = el(ordered ? "ol" : "ul");
    if (ordered && parseInt(first[2], 10) !== 1) node.start = parseInt(first[2], 10);
    while (i < lines.length) {
      const m = ITEM.exec(lines[i]);
      if (!m || m[1].length !== indent || /\d/.test(m[2]) !== ordered) break;
      const content = indent + m[2].length + 1;
      const item = [m[3]];
      i += 1;
      while (i < lines.length) {
        const line = lines[i];
        const lead = line.length - line.trimStart().length;
        if (!line.trim()) {
          const next = lines.slice(i + 1).find((l) => l.trim());
          if (next === undefined || next.length - next.trimStart().length <= indent) break;
          item.push("");
        } else if (lead > indent) {
          item.push(line.slice(Math.min(lead, content)));
        } else if (item[item.length - 1] !== "" && !startsBlock(line)) {
          item.push(line.trim()); // a lazy continuation of the item's paragraph
        } else {
          break;
        }
        i += 1;
      }
      const li = el("li");
      renderBlocks(item, li);
      const p = li.firstElementChild;
      if (p && p.tagName === "P" && !item.includes("")) p.replaceWith(...p.childNodes); // a tight list
      node.append(li);
    }
    parent.append(node);
    return i;
  }

  function cells(line) {
    let text = line.trim();
    if (text.startsWith("|")) text = text.slice(1);
    if (text.endsWith("|") && !text.endsWith("\\|")) text = text.slice(0, -1);
    return text.split(/(?<!\\)\|/).map((c) => c.trim().replace(/\\\|/g, "|"));
  }

  function table(lines, i, parent) {
    const wrap = el("div", "table-wrap");
    wrap.tabIndex = 0;
    const node = el("table");
    const head = el("thead");
    const row = el("tr");
    for (const cell of cells(lines[i])) { const th = el("th"); inline(cell, th); row.append(th); }
    head.append(row);
    const body = el("tbody");
    i += 2;
    while (i < lines.length && lines[i].includes("|") && lines[i].trim()) {
      const tr = el("tr");
      for (const cell of cells(lines[i])) { const td = el("td"); inline(cell, td); tr.append(td); }
      body.append(tr);
      i += 1;
    }
    node.append(head, body);
    wrap.append(node);
    parent.append(wrap);
    return i;
  }

  const INLINE = new RegExp([
    /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)/.source, // 1, 2: code span
    /\*\*(?=\S)([\s\S]*?\S)\*\*/.source, // 3: strong
    /__(?=\S)([\s\S]*?\S)__(?!\w)/.source, // 4: strong
    /\*(?=[^\s*])([\s\S]*?[^\s*])\*/.source, // 5: emphasis
    /(?<![\w\\])_(?=[^\s_])([\s\S]*?[^\s_])_(?!\w)/.source, // 6: emphasis
    /~~(?=\S)([\s\S]*?\S)~~/.source, // 7: strikethrough
    /(!?)\[([^\]\n]*)\]\(\s*<?([^\s<>()]*(?:\([^\s<>()]*\)[^\s<>()]*)*)>?(?:\s+"[^"\n]*")?\s*\)/.source, // 8, 9, 10
    /<(https?:\/\/[^\s<>]+)>/.source, // 11: autolink
    /\b(https?:\/\/[^\s<>]*[^\s<>.,:;"'!?)\]])/.source, // 12: bare URL
    /\\([\\`*_{}[\]()#+\-.!~|>])/.source, // 13: escaped character
  ].join("|"));

  function safeHref(raw) {
    // Only absolute http(s) links: no javascript:, data:, or a path back into the gateway.
    try {
      const url = new URL(raw);
      return url.protocol === "http:" || url.protocol === "https:" ? url.href : null;
    } catch { return null; }
  }

  function link(label, href) {
    const a = el("a", "", label);
    a.href = href;
    a.rel = "noopener noreferrer nofollow";
    a.target = "_blank";
    a.referrerPolicy = "no-referrer";
    return a;
  }

  function inline(text, parent) {
    let rest = text;
    while (rest) {
      const m = INLINE.exec(rest);
      if (!m) { parent.append(document.createTextNode(rest)); return; }
      if (m.index) parent.append(document.createTextNode(rest.slice(0, m.index)));
      rest = rest.slice(m.index + m[0].length);
      if (m[2] !== undefined) {
        parent.append(el("code", "", m[2]));
      } else if (m[3] !== undefined || m[4] !== undefined) {
        const strong = el("strong");
        inline(m[3] !== undefined ? m[3] : m[4], strong);
        parent.append(strong);
      } else if (m[5] !== undefined || m[6] !== undefined) {
        const em = el("em");
        inline(m[5] !== undefined ? m[5] : m[6], em);
        parent.append(em);
      } else if (m[7] !== undefined) {
        const del = el("del");
        inline(m[7], del);
        parent.append(del);
      } else if (m[9] !== undefined) {
        const href = safeHref(m[10]);
        if (!href) parent.append(document.createTextNode(m[0])); // not http(s): the source, as text
        else if (m[8]) parent.append(link(m[9] ? `image: ${m[9]}` : href, href)); // never loaded, only linked
        else {
          const a = link("", href);
          inline(m[9] || href, a);
          parent.append(a);
        }
      } else if (m[11] !== undefined || m[12] !== undefined) {
        const raw = m[11] !== undefined ? m[11] : m[12];
        const href = safeHref(raw);
        parent.append(href ? link(raw, href) : document.createTextNode(m[0]));
      } else {
        parent.append(document.createTextNode(m[13]));
      }
    }
  }

  // ------------------------------------------------------------------ the composer

  ui.composer.addEventListener("submit", (event) => { event.preventDefault(); send(); });
  ui.message.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault(); // Shift+Enter keeps the textarea's own new line
      send();
    } else if (event.key === "Escape" && state.running.size) {
      event.preventDefault();
      stopAll();
    }
  });

  function stopAll() {
    for (const answer of state.running) answer.controller.abort();
  }

  ui.stop.addEventListener("click", () => { stopAll(); ui.message.focus(); });
  ui.clear.addEventListener("click", () => {
    stopAll();
    state.turns = [];
    state.awaitingKey = [];
    ui.conversation.replaceChildren(ui.empty);
    ui.empty.hidden = false;
    ui.message.focus();
  });

  restoreSettings();
  setGatewayKey(gatewayKey());
  loadModels();
})();
