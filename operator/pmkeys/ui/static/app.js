/* pmkeys UI: the few things a server-rendered page cannot do on its own.
 *
 * - filter the key list as you type (the server renders every row; this only hides some);
 * - wait for the operator with visible progress, then show the new key once;
 * - regenerate and revoke through the JSON API, with the session's CSRF token.
 *
 * No framework, no build step, nothing loaded from elsewhere (the CSP allows only this file).
 */
"use strict";

(() => {
  document.documentElement.classList.add("js");
  const csrf = document.querySelector('meta[name="csrf-token"]')?.content || "";
  const $ = (id) => document.getElementById(id);
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const ISSUED = new Set(["Active", "Rotating"]);

  async function call(method, url, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(url, init);
    } catch (_) {
      return { ok: false, status: 0, data: null };
    }
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (response.status === 401) {
      window.location.assign(`/signin?reason=expired&next=${encodeURIComponent(window.location.pathname)}`);
    }
    return { ok: response.ok, status: response.status, data };
  }

  function errorText(result) {
    const error = result.data && result.data.error;
    if (error) {
      const field = (error.fields || []).find((f) => f.message);
      return field && field.field ? `${field.field}: ${field.message}` : error.message;
    }
    return result.status ? `The server answered ${result.status}.` : "The server could not be reached. Check your connection.";
  }

  // ---------------------------------------------------------------- dialogs
  function openDialog(dialog, focus) {
    if (!dialog.open) dialog.showModal();
    if (focus) focus.focus();
  }
  document.addEventListener("click", (event) => {
    const closer = event.target.closest("[data-close]");
    if (closer) closer.closest("dialog")?.close();
  });

  // ---------------------------------------------------------------- list filter
  function initFilter() {
    const form = document.querySelector("[data-live-filter]");
    if (!form) return;
    const query = $("filter-q");
    const status = $("filter-status");
    const rows = Array.from(document.querySelectorAll("#keys-table tbody tr"));
    const count = $("filter-count");
    const none = $("no-match");
    const apply = () => {
      const needle = query.value.trim().toLowerCase();
      const phase = status.value;
      let shown = 0;
      for (const row of rows) {
        const visible = (!needle || row.dataset.search.includes(needle)) && (!phase || row.dataset.status === phase);
        row.hidden = !visible;
        if (visible) shown += 1;
      }
      count.textContent = `${shown} of ${rows.length} key${rows.length === 1 ? "" : "s"}`;
      none.hidden = shown > 0;
      const params = new URLSearchParams();
      if (needle) params.set("q", query.value.trim());
      if (phase) params.set("status", phase);
      const search = params.toString();
      window.history.replaceState(null, "", search ? `?${search}` : window.location.pathname);
    };
    query.addEventListener("input", apply);
    status.addEventListener("change", apply);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      apply();
    });
  }

  // ---------------------------------------------------------------- key page
  function initKeyPage() {
    const page = $("key-page");
    if (!page) return;
    const api = page.dataset.api;
    const name = page.dataset.name;
    const progress = $("progress");

    const phaseStyles = JSON.parse(page.dataset.phaseStyles || "{}");

    function refreshHeader(key) {
      $("key-prefix").textContent = key.displayPrefix || "";
      $("key-id").textContent = key.keyId || "";
      $("key-id-label").hidden = !key.keyId;
      const pill = document.querySelector("#key-phase .pill");
      pill.className = `pill pill-${phaseStyles[key.phase] || "muted"}`;
      pill.lastChild.textContent = key.phase;
      const regenerate = $("regenerate-button");
      if (regenerate) regenerate.disabled = !key.keyId;
    }

    function step(id, state) {
      const item = $(`step-${id}`);
      item.classList.remove("is-done", "is-active");
      if (state) item.classList.add(`is-${state}`);
    }

    function progressMessage(title, detail, failed = false) {
      progress.hidden = false;
      progress.classList.toggle("is-failed", failed);
      $("progress-title").textContent = title;
      $("progress-detail").textContent = detail;
    }

    async function waitForIssued(previousKeyId, title) {
      progressMessage(title, "The operator is generating the key and storing its hash in Vault.");
      progress.scrollIntoView({ block: "nearest" });
      step("requested", "done");
      step("issuing", "active");
      step("ready", "");
      const started = Date.now();
      while (Date.now() - started < 120000) {
        const result = await call("GET", api);
        const seconds = Math.round((Date.now() - started) / 1000);
        if (result.ok) {
          const key = result.data;
          if (key.phase === "Failed") {
            progressMessage("The key could not be issued", key.message || "The operator reported a failure.", true);
            return null;
          }
          if (key.keyId && key.keyId !== previousKeyId && ISSUED.has(key.phase)) {
            step("issuing", "done");
            step("ready", "done");
            progressMessage("Your key is ready", `Issued in ${seconds} s.`);
            progress.classList.add("is-complete");
            refreshHeader(key);
            return key;
          }
          $("progress-detail").textContent = `Waiting for the operator… ${seconds} s (status: ${key.phase})`;
        } else if (result.status === 403 || result.status === 404) {
          progressMessage("The key is no longer available", errorText(result), true);
          return null;
        }
        await sleep(600);
      }
      progressMessage("Still waiting for the operator",
        "The key has not been issued after two minutes. It will appear here when it is; use “Show key” then.", true);
      return null;
    }

    // -- show once
    const showOnce = $("show-once");
    const secret = $("secret-value");
    const ack = $("ack");
    const done = $("show-once-done");
    const copyStatus = $("copy-status");

    function displayKey(revealed) {
      secret.textContent = revealed.apiKey;
      $("secret-key-id").textContent = revealed.keyId;
      ack.checked = false;
      done.disabled = true;
      copyStatus.textContent = "";
      openDialog(showOnce, $("copy-button"));
    }
    ack.addEventListener("change", () => {
      done.disabled = !ack.checked;
    });
    done.addEventListener("click", () => showOnce.close());
    showOnce.addEventListener("close", () => {
      secret.textContent = "";
      window.location.replace(window.location.pathname);
    });
    $("copy-button").addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(secret.textContent);
        copyStatus.textContent = "Copied to the clipboard.";
      } catch (_) {
        const range = document.createRange();
        range.selectNodeContents(secret);
        const selection = window.getSelection();
        selection.removeAllRanges();
        selection.addRange(range);
        copyStatus.textContent = "Selected — press Ctrl+C (⌘C) to copy.";
      }
    });

    async function reveal() {
      const result = await call("POST", `${api}/reveal`);
      if (result.ok) {
        displayKey(result.data);
        return;
      }
      const code = result.data && result.data.error && result.data.error.code;
      if (result.status === 409 && code === "already_revealed") {
        openDialog($("already-shown"), $("already-shown").querySelector("button"));
        return;
      }
      progressMessage("The key cannot be shown", errorText(result), true);
    }
    $("reveal-button")?.addEventListener("click", reveal);

    // -- regenerate
    const regenerateDialog = $("regenerate-dialog");
    const regenerateError = $("regenerate-error");
    function openRegenerate() {
      $("already-shown").close();
      regenerateError.hidden = true;
      openDialog(regenerateDialog, regenerateDialog.querySelector("input[name=grace]:checked"));
    }
    $("regenerate-button")?.addEventListener("click", openRegenerate);
    $("already-shown-regenerate")?.addEventListener("click", openRegenerate);
    $("regenerate-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const grace = new FormData(event.target).get("grace");
      const confirm = $("regenerate-confirm");
      confirm.disabled = true;
      const result = await call("POST", `${api}/regenerate`, { gracePeriod: grace });
      confirm.disabled = false;
      if (!result.ok) {
        regenerateError.textContent = errorText(result);
        regenerateError.hidden = false;
        return;
      }
      regenerateDialog.close();
      const key = await waitForIssued(result.data.previousKeyId, "Issuing your new key…");
      if (key) await reveal();
    });

    // -- revoke
    const revokeDialog = $("revoke-dialog");
    const revokeInput = $("revoke-confirm-input");
    const revokeButton = $("revoke-confirm");
    const revokeError = $("revoke-error");
    $("revoke-button")?.addEventListener("click", () => {
      revokeInput.value = "";
      revokeButton.disabled = true;
      revokeError.hidden = true;
      openDialog(revokeDialog, revokeInput);
    });
    revokeInput.addEventListener("input", () => {
      revokeButton.disabled = revokeInput.value !== name;
    });
    $("revoke-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      if (revokeInput.value !== name) return;
      revokeButton.disabled = true;
      revokeButton.textContent = "Revoking…";
      const result = await call("POST", `${api}/revoke`, { confirm: revokeInput.value });
      if (!result.ok) {
        revokeButton.textContent = "Revoke key";
        revokeButton.disabled = false;
        revokeError.textContent = errorText(result);
        revokeError.hidden = false;
        return;
      }
      for (let i = 0; i < 50; i += 1) {
        const current = await call("GET", api);
        if (current.ok && current.data.phase === "Revoked") break;
        await sleep(300);
      }
      window.location.assign(page.dataset.list);
    });

    // -- just created: wait for the operator, then show the key once
    if (page.dataset.awaiting === "new") {
      window.history.replaceState(null, "", window.location.pathname);
      waitForIssued("", "Issuing your key…").then((key) => (key ? reveal() : null));
    }
  }

  function initErrorSummary() {
    const summary = $("error-summary");
    if (summary) summary.focus();
  }

  initFilter();
  initKeyPage();
  initErrorSummary();
})();
