// Instant results as you type. The page works without this script: the form
// submits to the server, which renders the same grid.
(function () {
  "use strict";
  var form = document.getElementById("search");
  var input = document.getElementById("q");
  var grid = document.getElementById("results");
  var status = document.getElementById("status");
  if (!form || !input || !window.fetch) { return; }
  var timer = null;
  var latest = 0;

  function card(r) {
    var li = document.createElement("li");
    li.className = "card";
    var a = document.createElement("a");
    a.href = "thumbs/" + encodeURIComponent(r.id);
    a.title = r.path;
    var img = document.createElement("img");
    img.src = a.href;
    img.alt = r.path;
    img.loading = "lazy";
    a.appendChild(img);
    var score = document.createElement("span");
    score.className = "score";
    score.title = "cosine similarity";
    score.textContent = r.score.toFixed(2);
    var name = document.createElement("span");
    name.className = "name";
    name.textContent = r.path.split("/").pop();
    li.appendChild(a); li.appendChild(score); li.appendChild(name);
    return li;
  }

  function run() {
    var q = input.value.trim();
    if (!q) { return; }
    var ticket = ++latest;
    fetch("api/search?k=24&q=" + encodeURIComponent(q)).then(function (response) {
      return response.json().then(function (body) { return { ok: response.ok, body: body }; });
    }).then(function (res) {
      if (ticket !== latest) { return; }  // a newer query has been typed
      grid.textContent = "";
      var more = document.getElementById("more");
      if (more) { more.parentNode.remove(); }
      if (!res.ok) {
        status.innerHTML = "";
        var err = document.createElement("span");
        err.className = "error";
        err.textContent = res.body.error || "search failed";
        status.appendChild(err);
        return;
      }
      status.textContent = res.body.length ? "Best matches for \u201c" + q + "\u201d." : "No photos match \u201c" + q + "\u201d.";
      res.body.forEach(function (r) { grid.appendChild(card(r)); });
      history.replaceState(null, "", "?q=" + encodeURIComponent(q));
    }).catch(function () {
      status.textContent = "The appliance did not answer; is it still running?";
    });
  }

  input.addEventListener("input", function () {
    clearTimeout(timer);
    timer = setTimeout(run, 250);
  });
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    clearTimeout(timer);
    run();
  });
}());
