/* The page's script: sends the forms with fetch so nothing reloads, follows a
   running sync by polling /api/v1/status, opens the Information dialogs.
   Plain JS, no build step; without it every form still works (POST + redirect). */
(function () {
  "use strict";
  document.documentElement.classList.replace("no-js", "js");

  var POLL_MS = 1000;
  var SILENT_AFTER_MS = 15000;   // no daemon picked the request: say so
  var NOT_STARTED_POLLS = 4;     // picked, but no run appeared
  var T = {};
  var polling = false;
  var pickedWithoutRun = 0;
  var waitingSince = 0;
  var myRequest = null;          // the request this page made, if any

  function csrf() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }

  function t(key, values) {
    var text = T[key] || key;
    Object.keys(values || {}).forEach(function (k) { text = text.split("{" + k + "}").join(values[k]); });
    return text;
  }

  var toastTimer;
  function toast(message, isError) {
    var el = document.getElementById("toast");
    if (!el) return;
    el.textContent = message;
    el.className = "toast" + (isError ? " error" : "");
    el.hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(function () { el.hidden = true; }, 6000);
  }

  function clearErrors(form) {
    form.querySelectorAll("[aria-invalid]").forEach(function (el) { el.removeAttribute("aria-invalid"); });
    document.querySelectorAll(".field-error").forEach(function (el) {
      if (form.contains(el) || el.id === "start-error" || el.id === "time_utc-error") { el.hidden = true; el.textContent = ""; }
    });
  }

  function showError(form, field, message) {
    var box = field && document.getElementById(field + "-error");
    var input = field && document.getElementById(field);
    if (box) { box.textContent = message; box.hidden = false; }
    if (input && input.tagName === "INPUT") { input.setAttribute("aria-invalid", "true"); input.focus(); }
    toast(message, true);
  }

  /* Re-read the page and swap the named regions: one rendering, on the server. */
  function refresh(names) {
    return fetch(location.pathname, { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var active = document.activeElement && document.activeElement.id;
        names.forEach(function (name) {
          var sel = '[data-region="' + name + '"]';
          var old = document.querySelector(sel), fresh = doc.querySelector(sel);
          if (!old || !fresh) return;
          // A section folded or unfolded by the teacher stays so.
          if (old.tagName === "DETAILS" && fresh.tagName === "DETAILS") fresh.open = old.open;
          old.replaceWith(document.importNode(fresh, true));
        });
        // A run being followed stays shown busy, whatever the fresh HTML
        // said between the agent picking the request up and the run starting.
        if (polling) showBusy();
        var meta = doc.querySelector('meta[name="csrf-token"]');
        if (meta) document.querySelector('meta[name="csrf-token"]').content = meta.content;
        if (active && !document.activeElement.id) {
          var again = document.getElementById(active);
          if (again) again.focus();
        }
        watchProgress();
      });
  }

  function onSubmit(event) {
    var form = event.target;
    if (!form.hasAttribute("data-enhance")) return;
    event.preventDefault();
    var data = new FormData(form);
    var submitter = event.submitter;
    if (submitter && submitter.name) data.append(submitter.name, submitter.value);
    clearErrors(form);
    var kind = form.getAttribute("data-enhance");
    fetch(form.action, {
      method: "POST", body: data, credentials: "same-origin",
      headers: { "X-Requested-With": "fetch", Accept: "application/json", "X-CSRF-Token": csrf() }
    }).then(function (response) {
      if (response.status === 401) { location.href = "/login?next=" + encodeURIComponent(location.pathname); return; }
      return response.json().then(function (body) {
        if (!response.ok) {
          if (response.status === 403) { toast(body.error || t("form_expired"), true); setTimeout(function () { location.reload(); }, 1500); return; }
          showError(form, body.field, body.error);
          return;
        }
        toast(body.message);
        var regions = (form.getAttribute("data-refresh") || "").split(/\s+/).filter(Boolean);
        if (kind === "start") {
          myRequest = body.request_id;
          waitingSince = Date.now();
          pickedWithoutRun = 0;
          showStarting();
        }
        if (regions.length) return refresh(regions);
      });
    }).catch(function () { toast(t("form_expired"), true); });
  }

  function onChange(event) {
    var input = event.target;
    // A switch saves at once, except inside a form that has more fields to fill.
    if (input.getAttribute("role") === "switch" && input.form && !input.form.querySelector('input:not([type="hidden"]):not([role="switch"])')) {
      if (input.form.requestSubmit) input.form.requestSubmit(); else input.form.submit();
    }
  }

  var opener = null;
  function onClick(event) {
    var open = event.target.closest("[data-dialog]");
    if (open) {
      var dialog = document.getElementById(open.getAttribute("data-dialog"));
      if (dialog) { opener = open; dialog.showModal(); }
      return;
    }
    var copy = event.target.closest("[data-copy]");
    if (copy) {
      var source = document.getElementById(copy.getAttribute("data-copy"));
      if (source) copyText(source.textContent.trim(), copy);
      return;
    }
    var close = event.target.closest("[data-close]");
    if (close) { close.closest("dialog").close(); return; }
    if (event.target.tagName === "DIALOG") event.target.close();  // a click on the backdrop
  }

  /* The sync's id to the clipboard (the Clipboard API needs a secure
     context: over plain HTTP on the box, the selection is copied instead). */
  function copyText(text, button) {
    var done = function () { toast(button.getAttribute("data-copied") || text); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () { selectCopy(text, done); });
    } else {
      selectCopy(text, done);
    }
  }

  function selectCopy(text, done) {
    var area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.style.position = "fixed";
    area.style.opacity = "0";
    document.body.appendChild(area);
    area.select();
    try { document.execCommand("copy"); } catch (e) { /* the id stays selectable by hand */ }
    area.remove();
    done();
  }

  /* On a phone the long sections start folded. */
  function foldOnPhone() {
    if (!window.matchMedia || !window.matchMedia("(max-width: 600px)").matches) return;
    document.querySelectorAll("details[data-fold-on-phone]").forEach(function (d) { d.open = false; });
  }

  document.addEventListener("close", function (event) {
    if (event.target.tagName === "DIALOG" && opener && document.contains(opener)) opener.focus();
  }, true);

  /* -- a running sync ------------------------------------------------------- */

  function panel() { return document.getElementById("progress"); }

  function setButtonBusy(busy) {
    var button = document.getElementById("start");
    if (!button) return;
    button.disabled = busy;
    var label = button.querySelector(".label");
    if (label) label.textContent = busy ? t("sync_running") : t("start_sync");
    var icon = button.querySelector(".icon");
    if (icon) icon.classList.toggle("spin", busy);
  }

  /* The panel shows and the button waits for as long as the request or its
     run goes on, whatever a refreshed region said a moment before. */
  function showBusy() {
    var p = panel();
    if (!p) return;
    p.hidden = false;
    p.setAttribute("data-active", "1");
    setButtonBusy(true);
  }

  function showStarting() {
    showBusy();
    setText("phase", t("phase_starting"));
    note(t("requested"));
    poll();
  }

  function setText(id, text) {
    var el = document.getElementById(id);
    if (el && el.textContent !== text) el.textContent = text;
  }

  function note(text) {
    var el = document.getElementById("progress-note");
    if (!el) return;
    el.textContent = text || "";
    el.hidden = !text;
  }

  function meter(name, done, total) {
    var bar = document.getElementById(name + "-bar");
    if (bar) { bar.max = Math.max(total, 1); bar.value = Math.min(done, Math.max(total, 1)); }
    setText(name + "-count", t("n_of_total", { done: done, total: total }));
  }

  function showRun(run) {
    var p = run.progress || {};
    setText("phase", t("phase_" + (p.phase || "starting")));
    meter("courses", p.courses_done || 0, p.courses_total || 0);
    meter("events", p.events_done || 0, p.events_total || 0);
    note("");
  }

  function finish(run) {
    polling = false;
    var message = run ? t("sync_finished", { status: t("status_" + run.status) }) : t("not_started");
    var problem = !run || (run.status !== "completed" && run.status !== "completed_with_warnings");
    refresh(["sync", "queue", "history", "banners", "server", "box-moodle", "force", "health", "verify"]).then(function () { toast(message, problem); });
  }

  function update(status) {
    var request = status.request;
    var run = status.last_sync;
    setText("queued", String(status.queued));
    setText("sent-count", String(status.sent));
    if (request && !request.picked_at) {
      showBusy();
      if (!waitingSince) waitingSince = Date.now();
      note(Date.now() - waitingSince > SILENT_AFTER_MS ? t("agent_silent") : t("requested"));
      return true;
    }
    waitingSince = 0;
    if (status.running && run && run.status === "running") {
      pickedWithoutRun = 0;
      var toastEl = document.getElementById("toast");
      if (toastEl && toastEl.textContent === t("requested")) toastEl.hidden = true;  // the agent took it
      showBusy();
      showRun(run);
      return true;
    }
    var mine = request && myRequest !== null && String(request.id) === String(myRequest);
    if (mine && !request.sync_id) {
      // Picked: its run should appear at once, unless the daemon refused it.
      showBusy();
      if (++pickedWithoutRun < NOT_STARTED_POLLS) return true;
      finish(null);
      return false;
    }
    finish(run);
    return false;
  }

  function poll() {
    if (polling) return;
    polling = true;
    var tick = function () {
      fetch("/api/v1/status", { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.json(); })
        .then(function (status) { if (update(status)) setTimeout(tick, POLL_MS); })
        .catch(function () { setTimeout(tick, POLL_MS * 3); });  // the box may be busy: keep trying
    };
    tick();
  }

  function watchProgress() {
    var p = panel();
    if (p && p.getAttribute("data-request")) myRequest = p.getAttribute("data-request");
    if (p && p.getAttribute("data-active") === "1") poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    var texts = document.getElementById("texts");
    if (texts) T = JSON.parse(texts.textContent);
    foldOnPhone();
    document.addEventListener("submit", onSubmit);
    document.addEventListener("change", onChange);
    document.addEventListener("click", onClick);
    watchProgress();
  });
})();
