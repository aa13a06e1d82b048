// Upload with a progress bar for the bytes sent, then for the import the worker runs.
(function () {
  "use strict";
  const form = document.getElementById("upload-form");
  if (!form) return;
  const box = document.getElementById("upload-progress");
  const bar = document.getElementById("progress-bar");
  const label = document.getElementById("progress-label");
  const errorBox = document.getElementById("upload-error");
  const button = document.getElementById("upload-button");
  const newSource = document.getElementById("new-source");
  const sourceSelect = form.elements.source;

  // "A new source…" asks for its name and kind; an existing one needs neither.
  function showNewSource() {
    newSource.hidden = sourceSelect.value !== "new";
  }
  sourceSelect.addEventListener("change", showNewSource);
  showNewSource();

  // What the page calls a field: its label, not its name in the form.
  function labelOf(field) {
    const label = form.querySelector(`label[for="id_${field}"]`);
    return label ? label.textContent.trim() : "";
  }

  function showError(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    button.disabled = false;
  }

  // While the task queue is down, the run waits as "queued" and says so.
  function describe(state) {
    if (state.status === "queued") return state.error || "Queued for import…";
    return state.status === "running"
      ? `Importing… ${state.rows.toLocaleString()} rows so far`
      : `Import ${state.status}: ${state.rows.toLocaleString()} rows`;
  }

  function follow(statusUrl, message) {
    label.textContent = message || "Importing…";
    bar.style.width = "100%";
    bar.classList.add("pulse");
    const timer = setInterval(async () => {
      const response = await fetch(statusUrl, { headers: { Accept: "application/json" } });
      if (!response.ok) return;
      const state = await response.json();
      label.textContent = describe(state);
      if (state.status !== "running" && state.status !== "queued") {
        clearInterval(timer);
        window.location.href = state.url;
      }
    }, 1000);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    button.disabled = true;
    box.hidden = false;
    const request = new XMLHttpRequest();
    request.open("POST", form.action);
    request.setRequestHeader("Accept", "application/json");
    request.upload.addEventListener("progress", (e) => {
      if (!e.lengthComputable) return;
      const percent = Math.round((e.loaded / e.total) * 100);
      bar.style.width = percent + "%";
      label.textContent = `Uploading… ${percent}%`;
    });
    request.addEventListener("load", () => {
      let body = {};
      try { body = JSON.parse(request.responseText); } catch (_) { /* not JSON */ }
      if (request.status === 202) return follow(body.status_url, body.message);
      const errors = body.errors
        ? Object.entries(body.errors).map(([field, messages]) => {
          const label = labelOf(field);
          return label ? `${label}: ${messages.join(" ")}` : messages.join(" ");
        }).join(" · ")
        : `The upload failed (HTTP ${request.status}).`;
      box.hidden = true;
      showError(errors);
    });
    request.addEventListener("error", () => showError("The upload was interrupted. Try again."));
    request.send(new FormData(form));
  });
})();
