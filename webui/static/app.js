// babelsearch: small enhancements over server-rendered pages (everything works without this file).
"use strict";

document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", () => {
  setUpMoreResults();
  setUpImageUpload();
  setUpLanguageMenu();
});

// "More results" appends the next page in place instead of loading a new page: it fetches that page's
// HTML (the link the page already has, with its filters) and moves its cards here, so that every word,
// the "weaker matches" divider and the "+N similar" links come from the server in the page's language.
function setUpMoreResults() {
  const more = document.getElementById("more");
  const grid = document.getElementById("results");
  if (!more || !grid) return;
  const label = more.textContent;
  more.addEventListener("click", async (event) => {
    event.preventDefault();
    more.textContent = more.dataset.loading || "…";
    try {
      const response = await fetch(more.href, { headers: { Accept: "text/html" } });
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      if (!response.ok) {
        const notice = page.querySelector(".notice.error span");
        throw new Error(notice ? notice.textContent.trim() : response.statusText);
      }
      const items = page.querySelectorAll("#results > li");
      for (const item of items) {
        // one divider: where the first weaker match is, on whichever page it came
        if (item.classList.contains("divider") && grid.querySelector(".divider")) continue;
        grid.appendChild(document.adoptNode(item));
      }
      const next = page.getElementById("more");
      if (!next || items.length === 0) {
        more.parentElement.remove();
      } else {
        more.href = next.getAttribute("href");
        more.textContent = label;
      }
    } catch (error) {
      more.textContent = (more.dataset.failed || "") + " " + error.message;
    }
  });
}

// The page-language menu applies the choice at once (without JavaScript, its button does).
function setUpLanguageMenu() {
  const select = document.getElementById("ui-select");
  if (select) select.addEventListener("change", () => select.form.submit());
}

// Choosing a file submits the upload form; dropping an image anywhere on the page does the same.
function setUpImageUpload() {
  const form = document.getElementById("upload-form");
  const input = document.getElementById("upload-input");
  const hint = document.getElementById("drop-hint");
  if (!form || !input) return;
  input.addEventListener("change", () => { if (input.files.length) form.submit(); });
  let depth = 0;
  const hasFiles = (event) => event.dataTransfer && Array.from(event.dataTransfer.types).includes("Files");
  document.addEventListener("dragenter", (event) => {
    if (!hasFiles(event)) return;
    depth += 1;
    hint.hidden = false;
  });
  document.addEventListener("dragleave", () => {
    depth = Math.max(0, depth - 1);
    if (depth === 0) hint.hidden = true;
  });
  document.addEventListener("dragover", (event) => { if (hasFiles(event)) event.preventDefault(); });
  document.addEventListener("drop", (event) => {
    if (!hasFiles(event)) return;
    event.preventDefault();
    depth = 0;
    hint.hidden = true;
    const file = Array.from(event.dataTransfer.files).find((f) => f.type.startsWith("image/"));
    if (!file) return;
    const transfer = new DataTransfer();
    transfer.items.add(file);
    input.files = transfer.files;
    form.submit();
  });
}
