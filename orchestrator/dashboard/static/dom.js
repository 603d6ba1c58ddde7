// Building elements, and updating a live tree in place so focus, scroll and
// open dialogs survive the once-a-second refresh.

/** h("div", {class: "x", "data-testid": "y"}, child, ...) → Element. */
export function h(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name === "value" && !svg) el.value = value;
    el.setAttribute(name, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

function keyOf(node) {
  return node.nodeType === 1 ? node.getAttribute("data-key") || node.getAttribute("data-testid") : null;
}

function syncAttributes(from, to) {
  for (const { name } of [...from.attributes]) {
    if (!to.hasAttribute(name)) from.removeAttribute(name);
  }
  for (const { name, value } of [...to.attributes]) {
    if (from.getAttribute(name) !== value) from.setAttribute(name, value);
  }
  const control = from.tagName === "INPUT" || from.tagName === "SELECT" || from.tagName === "TEXTAREA";
  if (control && from !== document.activeElement && "value" in to && from.value !== to.value) {
    from.value = to.value;
  }
}

/** Make `from` look like `to`, reusing the nodes that match (by data-key or data-testid). */
export function morph(from, to) {
  if (from.nodeType !== to.nodeType || from.nodeName !== to.nodeName) {
    from.replaceWith(to);
    return;
  }
  if (from.nodeType === 3) {
    if (from.nodeValue !== to.nodeValue) from.nodeValue = to.nodeValue;
    return;
  }
  if (from.nodeType !== 1) return;
  syncAttributes(from, to);
  if (from.hasAttribute("data-keep")) return;
  morphChildren(from, to);
  if (from.tagName === "SELECT" && from !== document.activeElement && from.value !== to.value) {
    from.value = to.value;
  }
}

// An element built with the same data-sig as the one shown is left as it is.
function sameSignature(from, to) {
  return to.nodeType === 1 && to.hasAttribute("data-sig") && from.nodeType === 1 &&
    from.getAttribute("data-sig") === to.getAttribute("data-sig");
}

/** An element's signature: the text of what it shows, to skip rebuilding it unchanged. */
export function signature(...parts) {
  const text = JSON.stringify(parts);
  let hash = 0;
  for (let i = 0; i < text.length; i++) hash = (Math.imul(hash, 31) + text.charCodeAt(i)) | 0;
  return `${text.length}:${hash >>> 0}`;
}

/** Make the children of `parent` those of `next` (a fresh element). */
export function morphChildren(parent, next) {
  const keyed = new Map();
  for (const child of parent.childNodes) {
    const key = keyOf(child);
    if (key) keyed.set(key, child);
  }
  let cursor = parent.firstChild;
  for (const wanted of [...next.childNodes]) {
    const key = keyOf(wanted);
    let match = key ? keyed.get(key) : null;
    if (!match && !key && cursor && !keyOf(cursor)) match = cursor;
    if (match) {
      keyed.delete(key);
      if (match !== cursor) parent.insertBefore(match, cursor);
      else cursor = cursor.nextSibling;
      if (!sameSignature(match, wanted)) morph(match, wanted);
    } else {
      parent.insertBefore(wanted, cursor);
    }
  }
  while (cursor) {
    const after = cursor.nextSibling;
    cursor.remove();
    cursor = after;
  }
}
