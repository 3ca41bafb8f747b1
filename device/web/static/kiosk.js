// The kiosk slideshow: advance every `interval` seconds, arrow keys step, and
// follow the device: when someone searches or presses the button, the server's
// slideshow changes generation and this page shows it. Without this script the
// page still advances (a <noscript> refresh loads the next slide).
(function () {
  "use strict";
  var stateEl = document.getElementById("kiosk-state");
  if (!stateEl || !window.fetch) { return; }
  var state = JSON.parse(stateEl.textContent);
  var root = document.body.getAttribute("data-root") || "/";
  var slides = state.slides;
  var index = state.position;
  var generation = state.generation;
  var photo = document.getElementById("photo");
  var query = document.getElementById("query");
  var position = document.getElementById("position");
  var name = document.getElementById("name");
  var advanceTimer = null;
  var preload = new Image();

  function render() {
    if (!slides.length || !photo) { return; }
    var slide = slides[index];
    photo.src = slide.image;
    photo.alt = slide.path;
    position.textContent = (index + 1) + " / " + slides.length;
    name.textContent = slide.name;
    document.body.setAttribute("data-slide", slide.id);
    preload.src = slides[(index + 1) % slides.length].image;  // the next one shows without a wait
  }

  function schedule() {
    clearTimeout(advanceTimer);
    advanceTimer = setTimeout(function () { step(1); }, state.interval * 1000);
  }

  function step(delta) {
    if (slides.length) {
      index = (index + delta + slides.length) % slides.length;
      render();
    }
    schedule();
  }

  function sync() {
    fetch(root + "api/kiosk").then(function (response) { return response.json(); }).then(function (body) {
      var tokenBox = document.getElementById("admin-token");
      if (tokenBox) {  // the first start's admin token, until an admin call uses it
        tokenBox.hidden = !body.admin_token;
        document.getElementById("admin-token-value").textContent = body.admin_token || "";
      }
      if (body.generation === generation || !body.slides.length || !photo) { return; }
      generation = body.generation;
      slides = body.slides;
      index = body.position;
      query.textContent = body.title;
      render();
      schedule();
    }).catch(function () { /* the daemon is restarting: keep showing what we have */ });
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "ArrowRight" || event.key === " ") { event.preventDefault(); step(1); }
    else if (event.key === "ArrowLeft") { event.preventDefault(); step(-1); }
  });
  render();
  schedule();
  setInterval(sync, Math.min(state.interval, 1.5) * 1000);
}());
