// babelsearch: small enhancements over server-rendered pages (everything works without this file).
"use strict";

document.documentElement.classList.add("js");

document.addEventListener("DOMContentLoaded", () => {
  setUpMoreResults();
  setUpImageUpload();
});

// "More results" appends the next page in place instead of loading a new page.
function setUpMoreResults() {
  const more = document.getElementById("more");
  const grid = document.getElementById("results");
  if (!more || !grid) return;
  more.addEventListener("click", async (event) => {
    event.preventDefault();
    const params = new URLSearchParams({ q: more.dataset.q, k: more.dataset.k, offset: more.dataset.offset });
    if (more.dataset.lang) params.set("lang", more.dataset.lang);
    more.textContent = "Loading…";
    try {
      const response = await fetch("/api/search?" + params, { headers: { Accept: "application/json" } });
      const body = await response.json();
      if (!response.ok) throw new Error(body.error ? body.error.message : response.statusText);
      for (const hit of body.results) grid.appendChild(card(hit, more.dataset.q));
      if (body.next_offset === null || body.results.length === 0) {
        more.parentElement.remove();
      } else {
        more.dataset.offset = body.next_offset;
        params.set("offset", body.next_offset);
        more.href = "/?" + params;
        more.textContent = "More results";
      }
    } catch (error) {
      more.textContent = "Could not load more: " + error.message;
    }
  });
}

function card(hit, query) {
  const name = hit.path.split(/[\\/]/).pop();
  const item = document.createElement("li");
  item.className = "hit";
  const link = document.createElement("a");
  link.href = "/image/" + hit.id + (query ? "?q=" + encodeURIComponent(query) : "");
  link.title = hit.path;
  const img = document.createElement("img");
  img.src = "/images/" + hit.id + "/thumb";
  img.alt = name;
  img.loading = "lazy";
  const meta = document.createElement("span");
  meta.className = "meta";
  const label = document.createElement("span");
  label.className = "name";
  label.dir = "auto";
  label.textContent = name;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = hit.score.toFixed(3);
  meta.append(label, score);
  link.append(img, meta);
  item.append(link);
  return item;
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
