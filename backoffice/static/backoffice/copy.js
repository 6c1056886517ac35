// A "Copy" button after each secret shown once (code.api-key-secret). Without JavaScript the secret is still
// there, selected whole by one click.
"use strict";
document.querySelectorAll("code.api-key-secret").forEach(function (code) {
  const button = document.createElement("button");
  button.type = "button";
  button.className = "copy-secret";
  button.textContent = "Copy";
  button.setAttribute("aria-label", "Copy the API key");
  button.addEventListener("click", function () {
    const done = function () { button.textContent = "Copied"; };
    const fallback = function () {
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      if (document.execCommand("copy")) { done(); } else { button.textContent = "Press Ctrl+C"; }
    };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(code.textContent).then(done, fallback);
    } else {
      fallback();
    }
  });
  code.after(button);
});
