// Instant results as you type. Every page works without this script: the form
// submits to the server, which renders the same grid.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var input = document.getElementById("q");
  var grid = document.getElementById("results");
  var status = document.getElementById("status");
  var root = document.body.getAttribute("data-root") || "/";
  // Only the search page updates in place; other pages submit the form as usual.
  if (document.body.getAttribute("data-instant") !== "1") { return; }
  if (!form || !input || !grid || !status || !window.fetch || !window.URLSearchParams) { return; }
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

  function card(r, q) {
    var li = document.createElement("li");
    li.className = "card";
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
    score.title = "similarity score (cosine)";
    score.textContent = r.score.toFixed(2);
    li.appendChild(a);
    li.appendChild(score);
    return li;
  }

  function say(text, cls) {
    status.textContent = "";
    var span = document.createElement("span");
    if (cls) { span.className = cls; }
    span.textContent = text;
    status.appendChild(span);
  }

  function run(offset) {
    var q = input.value.trim();
    if (!q) { return; }
    var ticket = ++latest;
    var p = params(q, offset);
    if (!offset) { p.set("show", "1"); }  // the device's button and kiosk step through these results
    fetch(root + "api/search?" + p.toString()).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (res) {
      if (ticket !== latest) { return; }  // a newer query has been typed meanwhile
      var more = document.getElementById("more");
      if (more) { more.parentNode.remove(); }
      if (!offset) { grid.textContent = ""; }
      if (!res.ok) { say(res.body.error || "The search failed.", "error"); return; }
      if (!res.body.length && !offset) {
        say("No photos match \u201c" + q + "\u201d. Try other words, or loosen the filters.", "empty");
      } else {
        say("Best matches for \u201c" + q + "\u201d.");
      }
      res.body.forEach(function (r) { grid.appendChild(card(r, q)); });
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
        grid.parentNode.insertBefore(p2, grid.nextSibling);
      }
      var shown = params(q);
      shown.delete("k");
      history.replaceState(null, "", "?" + shown.toString());
    }).catch(function () {
      say("The appliance did not answer; is it still running?", "error");
    });
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
