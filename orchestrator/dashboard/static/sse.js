// Server-Sent Events read with fetch, so the request can carry the API key
// (EventSource cannot send an Authorization header).

import { ApiError, check, headers } from "./api.js";

/** Split a text stream into SSE messages: yields {id, type, data} for each. */
export async function* sseMessages(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal?.addEventListener("abort", onAbort);
  let buffer = "";
  let id = null;
  let type = "message";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let cut;
      while ((cut = buffer.search(/\r?\n/)) >= 0) {
        const line = buffer.slice(0, cut);
        buffer = buffer.slice(cut + (buffer[cut] === "\r" ? 2 : 1));
        if (line === "") {
          if (data.length) yield { id, type, data: data.join("\n") };
          data = [];
          id = null;
          type = "message";
        } else if (line.startsWith(":")) {
          continue;
        } else {
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") data.push(text);
          else if (field === "id") id = text;
          else if (field === "event") type = text;
        }
      }
    }
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** Follow /ui/api/events from after `lastId`, calling onEvent(event) for each; reconnects
 * until `signal` aborts. onState("live" | "retrying" | "unauthorized", detail) reports
 * the link. */
export async function followEvents({ onEvent, onState, signal, lastId = "0" }) {
  let delay = 1000;
  while (!signal.aborted) {
    try {
      const url = `/ui/api/events?${new URLSearchParams({ after: lastId })}`;
      const response = await fetch(url, { headers: headers({ Accept: "text/event-stream" }), signal });
      await check(response);
      onState("live");
      delay = 1000;
      for await (const message of sseMessages(response.body, signal)) {
        const event = JSON.parse(message.data);
        if (message.type === "error") {
          const { type, message: text } = event.error || {};
          throw new ApiError(0, type || "error", text || "the event stream failed");
        }
        if (message.id) lastId = message.id;
        onEvent(event);
      }
    } catch (err) {
      if (signal.aborted) return;
      if (err.status === 401) {
        // Nothing to retry until a key is entered; the page starts a new stream then.
        onState("unauthorized", err.message);
        await new Promise((resolve) => signal.addEventListener("abort", resolve));
        return;
      }
      onState("retrying", err.message);
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 5000);
  }
}
