// The session countdown and a little focus care. No framework: htmx does the server round trips.
(function () {
  "use strict";

  var deadline = null; // performance.now() at which the session ends, per the server
  var warned = false;
  var expired = false;

  function widget() { return document.getElementById("countdown"); }
  function all(selector) { return Array.prototype.slice.call(document.querySelectorAll(selector)); }
  function announce(text) {
    var region = document.getElementById("announce");
    if (region) region.textContent = text;
  }
  // As web/templating.py's mmss: 29:59, 7:59:59 past an hour, "6 d 23 h" past a day.
  function mmss(seconds) {
    if (seconds >= 86400) return Math.floor(seconds / 86400) + " d " + Math.floor(seconds % 86400 / 3600) + " h";
    var h = Math.floor(seconds / 3600), m = Math.floor(seconds % 3600 / 60), s = seconds % 60;
    var mm = (m < 10 ? "0" : "") + m + ":" + (s < 10 ? "0" : "") + s;
    return h ? h + ":" + mm : mm;
  }
  function resync() {
    var el = widget();
    if (el && window.htmx && el.hasAttribute("hx-get")) window.htmx.trigger(el, "countdown:resync");
  }

  // A widget arrived from the server (page load, poll, refresh): its number is the truth.
  function sync(el) {
    var seconds = Number(el.getAttribute("data-expires-in")) || 0;
    deadline = performance.now() + seconds * 1000;
    warned = false;
    expired = seconds <= 0;
    tick();
  }

  function tick() {
    var el = widget();
    if (!el || deadline === null) return;
    var left = Math.max(0, Math.ceil((deadline - performance.now()) / 1000));
    var warnAt = Number(el.getAttribute("data-warn-at")) || 0;
    all("[data-countdown-time]").forEach(function (t) { t.textContent = mmss(left); t.hidden = left === 0; });
    all("[data-countdown-stay]").forEach(function (b) { b.hidden = left === 0 || left > warnAt; });
    all("[data-countdown-expired]").forEach(function (m) { m.hidden = left > 0; });
    all("[data-countdown-live]").forEach(function (b) { b.hidden = left === 0; }); // useless once it is over
    el.classList.toggle("warning", left > 0 && left <= warnAt);
    el.classList.toggle("expired", left === 0);
    // Screen readers hear the warning and the end, not every tick.
    if (left > 0 && left <= warnAt && !warned) {
      warned = true;
      announce("Your session ends in " + mmss(left) + ". Choose Stay signed in to keep it.");
    }
    if (left === 0 && !expired) {
      expired = true;
      // The server's words (said once, in web/sessions), not a copy of them here.
      announce(el.getAttribute("data-expired-message") || "");
      resync(); // let the server confirm (another tab may have extended it)
    }
  }

  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    var el = root.id === "countdown" ? root : root.querySelector && root.querySelector("#countdown");
    if (el) sync(el);
  });
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") resync();
  });
  setInterval(tick, 1000);

  // Sudo mode: a request answered with the re-authentication dialog (X-Reauth) is kept, and
  // sent again once the dialog says it is done: from the same form, so with what was typed.
  var waiting = null;
  document.addEventListener("htmx:beforeSwap", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.getResponseHeader("X-Reauth") === "1") {
      var config = event.detail.requestConfig;
      waiting = { verb: config.verb, path: config.path, source: config.elt, target: config.target };
    }
  });
  // The re-authentication dialog arrives "open"; made modal, the browser keeps Tab inside it.
  document.addEventListener("htmx:load", function (event) {
    var root = event.detail.elt;
    var dialog = root.matches && root.matches("#dialog dialog[data-reauth]") ? root
      : root.querySelector && root.querySelector("#dialog dialog[data-reauth]");
    if (dialog && !dialog.matches(":modal") && dialog.showModal) {
      dialog.close();
      dialog.showModal();
      dialog.addEventListener("cancel", function () { waiting = null; closeDialog(); });
    }
  });
  function closeDialog() {
    var box = document.getElementById("dialog");
    if (box) box.innerHTML = "";
  }
  document.body.addEventListener("reauthenticated", function () {
    closeDialog();
    if (!waiting || !window.htmx) return;
    var again = waiting;
    waiting = null;
    window.htmx.ajax(again.verb.toUpperCase(), again.path, { source: again.source, target: again.target });
  });
  document.addEventListener("click", function (event) {
    if (event.target.closest && event.target.closest("[data-dialog-close]")) {
      waiting = null;
      closeDialog();
    }
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && document.querySelector("#dialog [data-reauth]")) {
      waiting = null;
      closeDialog();
    }
  });

  // After a form comes back with errors, put the keyboard on the first field to fix.
  document.addEventListener("htmx:afterSwap", function (event) {
    // With hx-swap="outerHTML" the target was replaced: look in what came in (event.target) instead.
    var target = event.detail.target && event.detail.target.isConnected ? event.detail.target : event.target;
    var invalid = target && target.querySelector && target.querySelector("[aria-invalid='true']");
    if (invalid) invalid.focus();
    else if (target && target.id === "main") target.focus();
  });
})();
