/* Several photos per challenge: drag and drop or pick; each chosen photo is previewed with a
 * label of its own (none by default: a batch is never silently labelled), and the send button
 * says which photos still need one. Then one XMLHttpRequest per file to the REST API with a
 * progress bar each, the next step in plain words, and the model's opinion once the upload
 * follow-up has scored the photo (polled for a few seconds). Without JavaScript the form stays
 * a plain one-photo form. Every file gets its own Idempotency-Key, reused on retries, so a
 * retried upload is never stored twice. */
(function () {
  "use strict";

  var MAX_ATTEMPTS = 3;
  var OPINION_POLLS = 8;          // the follow-up runs after commit: usually within a few seconds
  var OPINION_POLL_MS = 1500;

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
    status.textContent = photo.status === "pending" ? "Waiting for a check" : photo.status.charAt(0).toUpperCase() + photo.status.slice(1);
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
          var photo = JSON.parse(xhr.responseText);
          result.textContent = "Received.";
          result.className = "result accepted";
          var next = document.createElement("div");
          next.className = "next-step muted";
          next.textContent = photo.next_step || "";
          row.append(next);
          showOpinion(form, photo, row, 0);
          try { appendToMyPhotos(photo, file); } catch (e) { /* list refresh is cosmetic */ }
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

  function showOpinion(form, photo, row, polls) {
    if (photo.model_opinion) {
      var opinion = document.createElement("div");
      opinion.className = "model-opinion" + (photo.model_opinion.agrees && !photo.model_opinion.unsure ? "" : " needed");
      opinion.textContent = photo.model_opinion.message;
      row.append(opinion);
      return;
    }
    if (polls >= OPINION_POLLS) return;  // no published model yet, or a busy worker: /me/photos/ shows it later
    setTimeout(function () {
      var xhr = new XMLHttpRequest();
      xhr.open("GET", form.dataset.apiUrl + photo.id + "/");
      xhr.setRequestHeader("Accept", "application/json");
      xhr.onload = function () {
        if (xhr.status === 200) {
          try { showOpinion(form, JSON.parse(xhr.responseText), row, polls + 1); } catch (e) { /* stop polling */ }
        }
      };
      xhr.send();
    }, OPINION_POLL_MS);
  }

  function labelChoices(form) {
    return Array.prototype.filter.call(form.querySelector("select[name=label]").options, function (option) {
      return option.value;
    }).map(function (option) { return { name: option.value, example: option.dataset.example || "" }; });
  }

  function updateSendButton(form) {
    var button = form.querySelector(".send-button");
    var items = form._previews;
    var missing = [];
    items.forEach(function (item, index) {
      var needs = !item.select.value;
      item.row.classList.toggle("needs-label", needs);
      if (needs) missing.push(index + 1);
    });
    if (!items.length) {
      button.disabled = true;
      button.textContent = "Choose photos first";
    } else if (missing.length) {
      button.disabled = true;
      button.textContent = "Choose a label for photo" + (missing.length > 1 ? "s " : " ") + missing.join(", ");
    } else {
      button.disabled = false;
      button.textContent = "Send " + items.length + " photo" + (items.length > 1 ? "s" : "");
    }
  }

  function addPreviews(form, files) {
    var list = form.querySelector(".previews");
    var choices = labelChoices(form);
    Array.prototype.forEach.call(files, function (file) {
      var row = document.createElement("li");
      var number = form._previews.length + 1;
      var img = document.createElement("img");
      img.className = "preview";
      img.alt = "Preview of " + file.name;
      var url = URL.createObjectURL(file);
      img.src = url;
      var pick = document.createElement("div");
      pick.className = "pick";
      var name = document.createElement("div");
      name.className = "name";
      name.textContent = file.name;
      var select = document.createElement("select");
      select.setAttribute("aria-label", "Label of " + file.name);
      var none = document.createElement("option");
      none.value = "";
      none.textContent = "— choose a label —";
      select.append(none);
      choices.forEach(function (choice) {
        var option = document.createElement("option");
        option.value = choice.name;
        option.textContent = choice.name;
        select.append(option);
      });
      var example = document.createElement("img");
      example.className = "example";
      example.hidden = true;
      select.addEventListener("change", function () {
        var chosen = choices.filter(function (c) { return c.name === select.value; })[0];
        example.hidden = !(chosen && chosen.example);
        if (chosen && chosen.example) {
          example.src = chosen.example;
          example.alt = "Example photo of " + chosen.name;
        }
        updateSendButton(form);
      });
      var remove = document.createElement("button");
      remove.type = "button";
      remove.className = "link";
      remove.textContent = "Remove";
      remove.setAttribute("aria-label", "Remove " + file.name);
      var item = { file: file, row: row, select: select, url: url };
      remove.addEventListener("click", function () {
        form._previews.splice(form._previews.indexOf(item), 1);
        URL.revokeObjectURL(url);
        row.remove();
        updateSendButton(form);
      });
      pick.append(name, select);
      row.append(img, pick, example, remove);
      row.dataset.number = number;
      list.append(row);
      form._previews.push(item);
    });
    updateSendButton(form);
  }

  function sendPreviews(form) {
    var items = form._previews.filter(function (item) { return item.select.value; });
    if (items.length !== form._previews.length) return;  // the button is disabled: never a silent default
    form._previews = [];
    items.forEach(function (item) {
      uploadOne(form, item.file, item.select.value);
      URL.revokeObjectURL(item.url);
      item.row.remove();
    });
    updateSendButton(form);
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
    // Each photo gets its own label in its preview; the form-wide choice is for the plain form.
    form.querySelector(".no-js-label").hidden = true;
    form.querySelector("select[name=label]").required = false;
    form._previews = [];
    form.querySelector(".send-button").addEventListener("click", function () { sendPreviews(form); });

    [input, camera].forEach(function (field) {
      if (!field) return;
      field.addEventListener("change", function () {
        if (field.files.length) addPreviews(form, field.files);
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
      if (event.dataTransfer && event.dataTransfer.files.length) addPreviews(form, event.dataTransfer.files);
    });
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      sendPreviews(form);
    });
  }

  if (!window.XMLHttpRequest || !window.FormData || !window.crypto || !window.URL || !URL.createObjectURL) return;
  document.querySelectorAll("form.upload-form").forEach(enhance);
})();
