// Passkeys: registration on the security page, sign-in on the sign-in page (a button, and the
// browser's autofill where it supports it), and re-authentication in the sudo dialog.
// The one feature that needs JavaScript: without it (or without WebAuthn) nothing here shows.
(function () {
  "use strict";

  var supported = window.PublicKeyCredential &&
    typeof PublicKeyCredential.parseCreationOptionsFromJSON === "function" &&
    typeof PublicKeyCredential.parseRequestOptionsFromJSON === "function";

  function post(url, data) {
    // Same-origin form post: the server's CSRF check sees Sec-Fetch-Site: same-origin.
    return fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json" },
      body: new URLSearchParams(data || {}).toString()
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (body) {
        if (!response.ok) throw new Error(body.error || "Something went wrong (" + response.status + ").");
        return body;
      });
    });
  }

  function showError(scope, error) {
    var box = scope.querySelector("[data-passkey-error]") || document.querySelector("[data-passkey-error]");
    if (!box) return;
    // A cancelled prompt is not an error worth shouting about.
    box.textContent = error && error.name === "NotAllowedError" ? "The passkey prompt was closed." : String(error.message || error);
    box.hidden = false;
  }

  function register(button) {
    var scope = button.closest("[data-passkey-add]") || document;
    var name = scope.querySelector("#passkey-name");
    post(button.getAttribute("data-options"))
      .then(function (options) {
        return navigator.credentials.create({ publicKey: PublicKeyCredential.parseCreationOptionsFromJSON(options) });
      })
      .then(function (credential) {
        return post(button.getAttribute("data-action"), {
          credential: JSON.stringify(credential.toJSON()),
          name: name ? name.value : ""
        });
      })
      .then(function () { window.location.reload(); })
      .catch(function (error) { showError(scope, error); });
  }

  function assert(optionsUrl, actionUrl, extra, mediation) {
    return post(optionsUrl)
      .then(function (options) {
        var request = { publicKey: PublicKeyCredential.parseRequestOptionsFromJSON(options) };
        if (mediation) request.mediation = mediation;
        return navigator.credentials.get(request);
      })
      .then(function (credential) {
        var data = Object.assign({ credential: JSON.stringify(credential.toJSON()) }, extra || {});
        return post(actionUrl, data).catch(function (error) {
          error.chosen = true;  // the user picked a passkey: what the server says is for them
          throw error;
        });
      });
  }

  function signIn(button, mediation) {
    var remember = document.getElementById("remember");
    var extra = remember && remember.checked ? { remember: "1" } : {};
    return assert(button.getAttribute("data-options"), button.getAttribute("data-action"), extra, mediation)
      .then(function (body) { window.location.assign(body.location || "/"); })
      .catch(function (error) {
        // The autofill's own ends (nothing picked, the button took over) are not worth a word;
        // a passkey picked from it and then refused (removed from the account, a challenge
        // that expired while the page stood open) is.
        if (mediation !== "conditional" || error.chosen) showError(document, error);
      });
  }

  function reauth(button) {
    var scope = button.closest("form") || document;
    assert(button.getAttribute("data-options"), button.getAttribute("data-action"), { next: button.getAttribute("data-next") || "/" })
      .then(function (body) {
        var dialog = document.getElementById("dialog");
        if (dialog && dialog.contains(button)) {
          // In the htmx dialog: app.js replays the request that asked for this.
          document.body.dispatchEvent(new CustomEvent("reauthenticated"));
        } else {
          window.location.assign(body.location || "/");
        }
      })
      .catch(function (error) { showError(scope, error); });
  }

  function wire(root) {
    if (!supported) return;
    root.querySelectorAll("[data-passkey-add]").forEach(function (el) { el.hidden = false; });
    root.querySelectorAll("[data-passkey-needs-js]").forEach(function (el) { el.hidden = true; });
    root.querySelectorAll("[data-passkey-signin], [data-passkey-reauth]:not([data-passkey-none])").forEach(function (el) { el.hidden = false; });
  }

  document.addEventListener("click", function (event) {
    var target = event.target.closest && event.target.closest("[data-passkey-register], [data-passkey-signin], [data-passkey-reauth]");
    if (!target || !supported) return;
    event.preventDefault();
    if (target.hasAttribute("data-passkey-register")) register(target);
    else if (target.hasAttribute("data-passkey-signin")) signIn(target);
    else reauth(target);
  });

  document.addEventListener("DOMContentLoaded", function () {
    wire(document);
    // The browser offers passkeys in the email field's autofill, where it can.
    var button = document.querySelector("[data-passkey-signin]");
    if (button && supported && PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then(function (available) {
        if (available) signIn(button, "conditional");
      });
    }
  });
  document.addEventListener("htmx:load", function (event) { wire(event.detail.elt); });
})();
