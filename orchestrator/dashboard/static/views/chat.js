// Chat: try an agent or a model through the controller's gateway; the answer
// streams in token by token (POST /v1/chat/completions, stream: true).

import { check, headers } from "../api.js";
import { h, morphChildren } from "../dom.js";
import { sseMessages } from "../sse.js";

let target;
let input;
let send;
let stop;
let output;
let history = [];
let running = null;

function bubble(role, text) {
  const el = h("div", { class: `msg msg-${role}` }, h("span", { class: "who" }, role === "user" ? "you" : role), h("span", { class: "text" }, text));
  output.append(el);
  output.scrollTop = output.scrollHeight;
  return el.querySelector(".text");
}

function busy(on) {
  send.disabled = on;
  stop.hidden = !on;
  output.setAttribute("aria-busy", on ? "true" : "false");
}

async function ask(event) {
  event.preventDefault();
  const question = input.value.trim();
  if (!question || running) return;
  if (!target.value) {
    bubble("error", "Choose an agent or a model first (none is deployed yet?).");
    return;
  }
  input.value = "";
  history.push({ role: "user", content: question });
  bubble("user", question);
  const answer = bubble("assistant", "");
  running = new AbortController();
  busy(true);
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
      body: JSON.stringify({ model: target.value, messages: history, stream: true }),
      signal: running.signal,
    });
    await check(response);
    for await (const message of sseMessages(response.body, running.signal)) {
      if (message.data === "[DONE]") break;
      const chunk = JSON.parse(message.data);
      if (chunk.error) throw new Error(chunk.error.message || JSON.stringify(chunk.error));
      const piece = chunk.choices?.[0]?.delta?.content || "";
      answer.textContent += piece;
      output.scrollTop = output.scrollHeight;
    }
    history.push({ role: "assistant", content: answer.textContent });
  } catch (err) {
    if (err.name === "AbortError" || running?.signal.aborted) {
      answer.textContent += " [stopped]";
      history.push({ role: "assistant", content: answer.textContent });
    } else {
      answer.closest(".msg").classList.add("msg-error");
      answer.textContent += `${answer.textContent ? "\n" : ""}${err.message}`;
      history.pop();
    }
  } finally {
    running = null;
    busy(false);
  }
}

/** Build the chat panel inside `root` (once). */
export function mountChat(root) {
  target = h("select", { id: "chat-target", "data-testid": "chat-target" });
  input = h("textarea", { id: "chat-input", "data-testid": "chat-input", rows: 2, placeholder: "Ask something…", required: true });
  send = h("button", { type: "submit", "data-testid": "chat-send" }, "Send");
  stop = h("button", { type: "button", hidden: true, "data-testid": "chat-stop" }, "Stop");
  const clear = h("button", { type: "button", "data-testid": "chat-clear" }, "New chat");
  output = h("div", { class: "chat-output", "data-testid": "chat-output", role: "log", "aria-live": "polite", "aria-label": "conversation", tabindex: 0 });
  const form = h(
    "form",
    { class: "chat-form" },
    h("div", { class: "row" }, h("label", { for: "chat-target" }, "Agent or model "), target, clear),
    output,
    h("label", { for: "chat-input", class: "visually-hidden" }, "Message"),
    input,
    h("div", { class: "row" }, send, stop, h("span", { class: "muted" }, "Enter sends, Shift+Enter for a new line")),
  );
  form.addEventListener("submit", ask);
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) form.requestSubmit();
    if (event.key === "Enter" && !event.shiftKey) event.preventDefault();
  });
  stop.addEventListener("click", () => running?.abort());
  clear.addEventListener("click", () => {
    running?.abort();
    history = [];
    output.replaceChildren();
    input.focus();
  });
  root.append(form);
}

/** Offer the agents and models of a ClusterStatus, keeping the current choice. */
export function updateChatTargets(status) {
  const chosen = target.value;
  const agents = (status.agents || []).map((a) => a.name);
  const models = (status.models || []).map((m) => m.alias);
  const first = chosen || agents[0] || models[0] || "";
  const option = (name, kind) => h("option", { value: name, selected: name === first, "data-key": `${kind}:${name}` }, name);
  const next = h(
    "select",
    {},
    agents.length ? h("optgroup", { label: "Agents", "data-key": "agents" }, agents.map((n) => option(n, "agent"))) : null,
    models.length ? h("optgroup", { label: "Models", "data-key": "models" }, models.map((n) => option(n, "model"))) : null,
  );
  morphChildren(target, next);
  if (first && target.value !== first) target.value = first;
}
