// Passkeys on the second-factor pages (sidecar.passkeys): our own script, no library, no CDN.
// The button says what to do (data-purpose: register or signin) and where (data-options, data-submit);
// the page's form gives the CSRF token and the way back (rd). Errors are said in words, in an alert.
"use strict";

(function () {
  const button = document.getElementById("passkey");
  const alertBox = document.getElementById("passkey-error");
  if (!button || !window.PublicKeyCredential || !navigator.credentials) {
    return; // no WebAuthn here: the button stays hidden, the code form still works
  }
  button.hidden = false;

  function toBytes(text) {
    const base64 = text.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((text.length + 3) % 4);
    return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
  }

  function toText(buffer) {
    const bytes = new Uint8Array(buffer);
    let binary = "";
    for (const byte of bytes) {
      binary += String.fromCharCode(byte);
    }
    return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }

  function field(name) {
    const input = document.querySelector(`input[name="${name}"]`);
    return input ? input.value : "";
  }

  async function post(url, fields) {
    const body = new URLSearchParams({ csrf: field("csrf"), rd: field("rd"), ...fields });
    const response = await fetch(url, { method: "POST", body, credentials: "same-origin" });
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      throw new Error(answer.error || String(response.status));
    }
    return answer;
  }

  function creation(options) {
    options.challenge = toBytes(options.challenge);
    options.user.id = toBytes(options.user.id);
    for (const item of options.excludeCredentials || []) {
      item.id = toBytes(item.id);
    }
    return { publicKey: options };
  }

  function request(options) {
    options.challenge = toBytes(options.challenge);
    for (const item of options.allowCredentials || []) {
      item.id = toBytes(item.id);
    }
    return { publicKey: options };
  }

  function serialize(credential) {
    const response = credential.response;
    const out = { clientDataJSON: toText(response.clientDataJSON) };
    if (response.attestationObject) {
      out.attestationObject = toText(response.attestationObject);
      out.transports = response.getTransports ? response.getTransports() : [];
    } else {
      out.authenticatorData = toText(response.authenticatorData);
      out.signature = toText(response.signature);
      if (response.userHandle) {
        out.userHandle = toText(response.userHandle);
      }
    }
    return JSON.stringify({ id: credential.id, rawId: toText(credential.rawId), type: credential.type,
                            response: out, clientExtensionResults: {} });
  }

  const MESSAGES = {
    refused: "That passkey was not accepted. Use another one, or your code.",
    throttled: "Too many failed attempts. Wait a few minutes, then try again.",
    expired: "This page expired. Reload it and try again.",
    unavailable: "Sign-in is unavailable right now. Try again in a minute.",
  };

  function fail(reason) {
    alertBox.querySelector("span").textContent = MESSAGES[reason] || "The passkey could not be used. Try again, or use your code.";
    alertBox.hidden = false;
    button.disabled = false;
    button.focus();
  }

  button.addEventListener("click", async () => {
    const purpose = button.dataset.purpose;
    button.disabled = true;
    alertBox.hidden = true;
    let started;
    try {
      started = await post(button.dataset.options, { purpose });
    } catch (error) {
      fail(error.message);
      return;
    }
    let credential;
    try {
      credential = purpose === "register"
        ? await navigator.credentials.create(creation(started.options))
        : await navigator.credentials.get(request(started.options));
    } catch (error) {
      fail("cancelled");
      return;
    }
    try {
      const done = await post(button.dataset.submit, { state: started.state, credential: serialize(credential) });
      window.location.assign(done.location);
    } catch (error) {
      fail(error.message);
    }
  });
})();
