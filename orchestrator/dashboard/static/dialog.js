// The confirmation dialog every action goes through: focus stays inside it,
// Escape cancels, and it gives back the reason the operator typed.

const dialog = () => document.getElementById("confirm");

function trapFocus(event) {
  if (event.key !== "Tab") return;
  const focusable = [...dialog().querySelectorAll("button, input, select, textarea")].filter(
    (el) => !el.disabled && el.offsetParent !== null,
  );
  if (!focusable.length) return;
  const first = focusable[0];
  const last = focusable[focusable.length - 1];
  if (event.shiftKey && document.activeElement === first) {
    last.focus();
    event.preventDefault();
  } else if (!event.shiftKey && document.activeElement === last) {
    first.focus();
    event.preventDefault();
  }
}

/** Ask before acting. Resolves {reason} when confirmed, null when cancelled.
 * `withReason` shows a text field for the reason kept with the action. */
export function confirmAction({ title, message, confirmLabel, danger = false, withReason = false }) {
  const box = dialog();
  const opener = document.activeElement;
  box.querySelector("#confirm-title").textContent = title;
  box.querySelector("#confirm-message").textContent = message;
  const yes = box.querySelector("[data-testid=confirm-yes]");
  const no = box.querySelector("[data-testid=confirm-no]");
  const reasonRow = box.querySelector("#confirm-reason-row");
  const reason = box.querySelector("#confirm-reason");
  yes.textContent = confirmLabel;
  yes.classList.toggle("danger", danger);
  reasonRow.hidden = !withReason;
  reason.value = "";
  return new Promise((resolve) => {
    const finish = (answer) => {
      box.removeEventListener("keydown", trapFocus);
      box.removeEventListener("cancel", onCancel);
      yes.onclick = null;
      no.onclick = null;
      if (box.open) box.close();
      if (opener && opener.isConnected) opener.focus();
      resolve(answer);
    };
    const onCancel = (event) => {
      event.preventDefault();
      finish(null);
    };
    box.addEventListener("keydown", trapFocus);
    box.addEventListener("cancel", onCancel);
    // Enter in the reason field confirms, as the Confirm button does.
    box.querySelector("form").onsubmit = (event) => {
      event.preventDefault();
      yes.click();
    };
    yes.onclick = () => finish({ reason: reason.value.trim() });
    no.onclick = () => finish(null);
    box.showModal();
    (withReason ? reason : no).focus();
  });
}
