/* Several photos per challenge: drag and drop or pick, one XMLHttpRequest per file to the
 * REST API with a progress bar each. Without JavaScript the form stays a plain one-photo form.
 * Every file gets its own Idempotency-Key, reused on retries, so a retried upload is never
 * stored twice. */
(function () {
  "use strict";

  var MAX_ATTEMPTS = 3;

  function randomKey() {
    if (window.crypto && crypto.randomUUID) {
      try { return crypto.randomUUID(); } catch (e) { /* insecure context: fall through */ }
    }
    var bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.prototype.map.call(bytes, function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function csrfToken(form) {
    var field = form.querySelector("input[name=csrfmiddlewaretoken]");
    if (field) return field.value;
    var match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return match ? decodeURIComponent(match[1]) : "";
  }

  function errorMessage(xhr) {
    try {
      var body = JSON.parse(xhr.responseText);
      if (body && body.error && body.error.message) return body.error.message;
      if (body && body.detail) return body.detail;
    } catch (e) { /* not JSON */ }
    if (xhr.status === 413) return "The photo is too large.";
    return "Upload failed (" + (xhr.status || "network error") + ").";
  }

  function appendToMyPhotos(photo, file) {
    var list = document.getElementById("my-photos");
    if (!list) return;
    var empty = document.getElementById("my-photos-empty");
    if (empty) empty.remove();
    var item = document.createElement("li");
    var img = document.createElement("img");
    img.src = list.dataset.imageUrlTemplate.replace("00000000-0000-0000-0000-000000000000", photo.id);
    img.alt = photo.label + " photo";
    img.width = 160;
    img.height = 160;
    var label = document.createElement("span");
    label.textContent = photo.label;
    var status = document.createElement("span");
    status.className = "status-" + photo.status;
    status.textContent = photo.status.charAt(0).toUpperCase() + photo.status.slice(1);
    item.append(img, label, " · ", status);
    item.dataset.photoId = photo.id;
    list.prepend(item);
  }

  function uploadOne(form, file, label) {
    var row = document.createElement("li");
    var name = document.createElement("div");
    name.className = "name";
    name.textContent = file.name + " (" + label + ")";
    var bar = document.createElement("progress");
    bar.max = 100;
    bar.value = 0;
    bar.setAttribute("aria-label", "Upload of " + file.name);
    var result = document.createElement("div");
    result.className = "result";
    result.textContent = "Waiting…";
    row.append(name, bar, result);
    form.querySelector(".uploads").append(row);

    var key = randomKey();
    var attempt = 0;

    function send() {
      attempt += 1;
      var data = new FormData();
      data.append("challenge", form.dataset.challenge);
      data.append("label", label);
      data.append("image", file, file.name);
      var xhr = new XMLHttpRequest();
      xhr.open("POST", form.dataset.apiUrl);
      xhr.setRequestHeader("X-CSRFToken", csrfToken(form));
      xhr.setRequestHeader("Idempotency-Key", key);
      xhr.setRequestHeader("Accept", "application/json");
      xhr.upload.onprogress = function (event) {
        if (event.lengthComputable) {
          bar.value = Math.round((event.loaded / event.total) * 100);
          result.textContent = "Uploading… " + bar.value + "%";
        }
      };
      xhr.onload = function () {
        if (xhr.status === 201 || xhr.status === 200) {
          bar.value = 100;
          result.textContent = "accepted";
          result.className = "result accepted";
          try { appendToMyPhotos(JSON.parse(xhr.responseText), file); } catch (e) { /* list refresh is cosmetic */ }
        } else if (xhr.status >= 500 && attempt < MAX_ATTEMPTS) {
          retry();
        } else {
          fail(errorMessage(xhr));
        }
      };
      xhr.onerror = function () {
        if (attempt < MAX_ATTEMPTS) retry(); else fail("Network error: please try again.");
      };
      xhr.send(data);
    }

    function retry() {
      result.textContent = "Retrying…";
      bar.value = 0;
      setTimeout(send, 1000 * attempt);
    }

    function fail(message) {
      result.textContent = "Not accepted: " + message;
      result.className = "result failed";
      bar.value = 0;
      row.dataset.failed = "true";
    }

    send();
  }

  function uploadAll(form, files) {
    var label = form.querySelector("select[name=label]").value;
    Array.prototype.forEach.call(files, function (file) { uploadOne(form, file, label); });
  }

  function enhance(form) {
    var input = form.querySelector("input[name=image]");
    var camera = form.querySelector(".camera-input");
    var zone = form.querySelector(".dropzone");
    input.multiple = true;
    input.required = false;
    input.classList.add("visually-hidden");
    form.querySelectorAll(".js-only").forEach(function (el) { el.hidden = false; });
    form.querySelector(".no-js-submit").hidden = true;

    [input, camera].forEach(function (field) {
      if (!field) return;
      field.addEventListener("change", function () {
        if (field.files.length) uploadAll(form, field.files);
        field.value = "";
      });
    });
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.add("dragover"); });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function (event) { event.preventDefault(); zone.classList.remove("dragover"); });
    });
    zone.addEventListener("drop", function (event) {
      if (event.dataTransfer && event.dataTransfer.files.length) uploadAll(form, event.dataTransfer.files);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (input.files.length) uploadAll(form, input.files);
    });
  }

  if (!window.XMLHttpRequest || !window.FormData || !window.crypto) return;
  document.querySelectorAll("form.upload-form").forEach(enhance);
})();
