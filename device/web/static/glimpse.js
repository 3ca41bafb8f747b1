// Instant results as you type. Every page works without this script: the form
// submits to the server, which renders the same grid.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var input = document.getElementById("q");
  var box = document.getElementById("results");
  var status = document.getElementById("status");
  var root = document.body.getAttribute("data-root") || "/";
  // Only the search page updates in place; other pages submit the form as usual.
  if (document.body.getAttribute("data-instant") !== "1") { return; }
  if (!form || !input || !box || !status || !window.fetch || !window.URLSearchParams) { return; }
  var timer = null;
  var latest = 0;
  var pageSize = 24;

  function params(q, offset) {
    var p = new URLSearchParams();
    p.set("q", q);
    p.set("k", String(pageSize));
    if (offset) { p.set("offset", String(offset)); }
    ["folder", "from", "to", "min_score"].forEach(function (name) {
      var el = document.getElementById(name);
      if (el && el.value) { p.set(name, el.value); }
    });
    return p;
  }

  // The results as the server renders them: strong matches in #best, the rest in
  // #weaker under a "Weaker matches" heading (no strengths: all in #best).
  function resultsBox() {
    box = document.getElementById("results");
    if (box.tagName !== "DIV") {  // the start page's photo list gives way to results
      var div = document.createElement("div");
      div.id = "results";
      div.className = "results";
      box.parentNode.replaceChild(div, box);
      box = div;
    }
    return box;
  }

  function list(weak) {
    var ol = document.getElementById(weak ? "weaker" : "best");
    if (ol) { return ol; }
    ol = document.createElement("ol");
    ol.id = weak ? "weaker" : "best";
    ol.className = "grid";
    if (!weak) { box.insertBefore(ol, box.firstChild); return ol; }
    var section = document.createElement("section");
    section.id = "weaker-section";
    section.setAttribute("aria-labelledby", "weaker-heading");
    var heading = document.createElement("h2");
    heading.id = "weaker-heading";
    heading.className = "weaker-heading";
    heading.textContent = "Weaker matches";
    section.appendChild(heading);
    section.appendChild(ol);
    box.appendChild(section);
    return ol;
  }

  function card(r, q) {
    var li = document.createElement("li");
    li.className = r.strength ? "card " + r.strength : "card";
    var a = document.createElement("a");
    a.href = root + "items/" + encodeURIComponent(r.id) + "?score=" + r.score.toFixed(4) + "&q=" + encodeURIComponent(q);
    var img = document.createElement("img");
    img.src = root + "thumbs/" + encodeURIComponent(r.id);
    img.alt = r.path;
    img.loading = "lazy";
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = r.path.split("/").pop();
    a.appendChild(img);
    a.appendChild(name);
    var score = document.createElement("span");
    score.className = "score";
    score.title = "similarity score (cosine)" + (r.strength ? ": a " + r.strength + " match" : "");
    score.textContent = r.score.toFixed(2);
    li.appendChild(a);
    li.appendChild(score);
    return li;
  }

  function say(text, cls, id, rest) {
    status.textContent = "";
    var span = document.createElement("span");
    if (cls) { span.className = cls; }
    if (id) { span.id = id; }
    span.textContent = text;
    status.appendChild(span);
    if (rest) { status.appendChild(document.createTextNode(" " + rest)); }
  }

  function run(offset) {
    var q = input.value.trim();
    if (!q) { return; }
    var ticket = ++latest;
    var p = params(q, offset);
    fetch(root + "api/search?" + p.toString()).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (res) {
      if (ticket !== latest) { return; }  // a newer query has been typed meanwhile
      var more = document.getElementById("more");
      if (more) { more.parentNode.remove(); }
      resultsBox();
      if (!offset) { box.textContent = ""; }
      if (!res.ok) { say(res.body.error || "The search failed.", "error"); return; }
      var calibrated = res.body.some(function (r) { return r.strength; });
      var strong = res.body.some(function (r) { return r.strength === "strong"; });
      if (!res.body.length && !offset) {
        say("No photos match \u201c" + q + "\u201d. Try other words, or loosen the filters.", "empty");
      } else if (!offset && calibrated && !strong) {
        say("No good match for \u201c" + q + "\u201d.", "no-good", "no-good",
            "The closest photos are below, under Weaker matches.");
      } else if (!offset) {
        say("Best matches for \u201c" + q + "\u201d.");
      }
      res.body.forEach(function (r) { list(r.strength === "weak").appendChild(card(r, q)); });
      if (!offset) { offerShow(q, res.body.length > 0); }
      if (res.body.length === pageSize) {
        var p2 = document.createElement("p");
        p2.className = "more";
        var link = document.createElement("a");
        link.id = "more";
        link.href = "?" + params(q).toString();
        link.textContent = "More results";
        link.addEventListener("click", function (event) {
          event.preventDefault();
          run((offset || 0) + pageSize);
        });
        p2.appendChild(link);
        box.parentNode.insertBefore(p2, box.nextSibling);
      }
      var shown = params(q);
      shown.delete("k");
      history.replaceState(null, "", "?" + shown.toString());
    }).catch(function () {
      say("The appliance did not answer; is it still running?", "error");
    });
  }

  // "Show on the screen" follows what is on this page now.
  function offerShow(q, any) {
    var show = document.getElementById("show-form");
    if (!show) { return; }
    var values = { q: q };
    ["folder", "from", "to", "min_score"].forEach(function (name) {
      var el = document.getElementById(name);
      values[name] = el ? el.value : "";
    });
    Object.keys(values).forEach(function (name) {
      var field = show.querySelector("input[type=hidden][name='" + name + "']");
      if (field) { field.value = values[name]; }
    });
    show.hidden = !any;
    var said = show.querySelector(".show-status");
    if (said) { said.textContent = ""; }
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(function () { run(0); }, 250);
  });
  form.addEventListener("submit", function (event) {
    if (!input.value.trim()) { return; }  // let the browser show the start page
    event.preventDefault();
    clearTimeout(timer);
    run(0);
  });
  ["folder", "from", "to", "min_score"].forEach(function (name) {
    var el = document.getElementById(name);
    if (el) { el.addEventListener("change", function () { run(0); }); }
  });
}());

// Admin actions from the browser: "Add photos" and "Show on the screen". They are
// sent with fetch, so a missing or wrong admin token (401) never loses the chosen
// files: a small form asks for the token, keeps it in sessionStorage (this tab,
// until it is closed) and sends it as the Authorization header the API expects.
// Without JavaScript both are ordinary form posts.
(function () {
  "use strict";
  if (!window.fetch || !window.FormData) { return; }
  var KEY = "glimpse.adminToken";
  var root = document.body.getAttribute("data-root") || "/";

  function storedToken() {
    try { return window.sessionStorage.getItem(KEY) || ""; } catch (e) { return ""; }
  }
  function keepToken(token) {
    try { window.sessionStorage.setItem(KEY, token); } catch (e) { /* storage off: ask each time */ }
  }
  function forgetToken() {
    try { window.sessionStorage.removeItem(KEY); } catch (e) { /* nothing kept */ }
  }
  function headers(csrf) {
    var h = { "X-CSRF-Token": csrf || "" };
    var token = storedToken();
    if (token) { h.Authorization = "Bearer " + token; }
    return h;
  }
  function answer(response) {
    return response.json().catch(function () { return {}; }).then(function (body) {
      return { status: response.status, ok: response.ok, body: body };
    });
  }
  function csrfOf(form) {
    var field = form.querySelector("input[name=csrf_token]");
    return field ? field.value : "";
  }

  // --- Add photos ---------------------------------------------------------------------
  var upload = document.getElementById("upload");
  var tokenForm = document.getElementById("token-form");
  if (upload && tokenForm) {
    var files = document.getElementById("files");
    var progress = document.getElementById("upload-progress");
    var tokenInput = document.getElementById("token-input");
    var reason = document.getElementById("token-reason");
    var box = document.getElementById("upload-results-box");
    var list = document.getElementById("upload-results");
    var plainToken = upload.querySelector(".token-field");
    if (plainToken) {  // the token form below asks for it only when needed
      plainToken.hidden = true;
      plainToken.querySelector("input").required = false;
    }
    var send = function () {
      if (!files.files.length) { files.reportValidity(); return; }
      var data = new FormData();
      Array.prototype.forEach.call(files.files, function (file) { data.append("files", file, file.name); });
      progress.textContent = "Sending " + files.files.length + " photo" + (files.files.length === 1 ? "" : "s") + "\u2026";
      fetch(upload.getAttribute("data-api"), { method: "POST", body: data, headers: headers(csrfOf(upload)),
                                               credentials: "same-origin" })
        .then(answer).then(function (res) {
          progress.textContent = "";
          if (res.status === 401) {
            forgetToken();
            tokenForm.hidden = false;
            reason.textContent = (res.body.error || "").indexOf("wrong") === 0
              ? "That admin token is wrong. Enter it again; your photos are still chosen."
              : "Adding photos needs the admin token. Enter it; your photos are still chosen.";
            tokenInput.value = "";
            tokenInput.focus();
            return;
          }
          if (!res.ok) {
            progress.innerHTML = "";
            var span = document.createElement("span");
            span.className = "error";
            span.textContent = res.body.error || ("The upload failed (" + res.status + ").");
            progress.appendChild(span);
            return;
          }
          tokenForm.hidden = true;
          list.textContent = "";
          res.body.forEach(function (r) {
            var li = document.createElement("li");
            li.textContent = r.name + ": ";
            var what = document.createElement("span");
            if (r.status === "queued") { what.textContent = "added, being embedded"; }
            else if (r.status === "duplicate") { what.textContent = "already here"; }
            else if (r.status === "in_bundle") { what.textContent = "already in the bundle"; }
            else { what.className = "error"; what.textContent = "refused: " + r.reason; }
            li.appendChild(what);
            list.appendChild(li);
          });
          box.hidden = false;
          upload.reset();
        }).catch(function () {
          progress.textContent = "The appliance did not answer; your photos are still chosen, try again.";
        });
    };
    upload.addEventListener("submit", function (event) { event.preventDefault(); send(); });
    tokenForm.addEventListener("submit", function (event) {
      event.preventDefault();
      if (!tokenInput.value) { return; }
      keepToken(tokenInput.value);
      send();
    });
  }

  // --- Show on the screen ---------------------------------------------------------------
  Array.prototype.forEach.call(document.querySelectorAll("form.show-form"), function (form) {
    var said = form.querySelector(".show-status");
    var tokenField = form.querySelector(".token-field");
    if (tokenField) { tokenField.hidden = true; }
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (tokenField && !tokenField.hidden) {
        var typed = tokenField.querySelector("input").value;
        if (typed) { keepToken(typed); }
      }
      var body = {};
      Array.prototype.forEach.call(form.querySelectorAll("input[type=hidden]"), function (field) {
        if (field.name !== "csrf_token" && field.value) { body[field.name] = field.value; }
      });
      var h = headers(csrfOf(form));
      h["Content-Type"] = "application/json";
      said.textContent = "";
      fetch(root + "api/admin/show", { method: "POST", body: JSON.stringify(body), headers: h,
                                       credentials: "same-origin" })
        .then(answer).then(function (res) {
          if (res.status === 401 && tokenField) {
            forgetToken();
            tokenField.hidden = false;
            tokenField.querySelector("input").focus();
            said.textContent = "Enter the admin token, then press the button again.";
            return;
          }
          if (!res.ok) { said.textContent = res.body.error || ("Refused (" + res.status + ")."); return; }
          if (tokenField) { tokenField.hidden = true; }
          said.textContent = "On the screen now: \u201c" + res.body.query + "\u201d, " + res.body.count +
            " photo" + (res.body.count === 1 ? "" : "s") + ".";
        }).catch(function () { said.textContent = "The appliance did not answer."; });
    });
  });
}());
