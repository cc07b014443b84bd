/* The admin dashboard's refresh: every few seconds, fetch the dashboard's body as server-rendered
   HTML (admin:dashboard_fragment) and swap it in; the window links switch between 15 and 60
   minutes without reloading the page. Without this script the page shows the data as of its
   loading, and the links reload it. */
(function () {
  "use strict";
  var root = document.getElementById("dashboard");
  var body = document.getElementById("dashboard-body");
  var toggle = document.getElementById("dashboard-window-toggle");
  var stale = document.getElementById("dashboard-stale");
  if (!root || !body || !window.fetch) {
    return;
  }
  var every = 1000 * (parseInt(root.getAttribute("data-refresh-seconds"), 10) || 10);
  var minutes = root.getAttribute("data-window");
  var pending = null;

  function fragmentUrl() {
    var query = new URLSearchParams({ window: minutes });
    var route = root.getAttribute("data-route");
    if (route) {
      query.set("route", route);
    }
    return root.getAttribute("data-fragment-url") + "?" + query.toString();
  }

  function refresh() {
    if (pending) {
      // Still unanswered when the next refresh is due: what is shown is getting old.
      pending.abort();
      root.classList.add("stale");
      stale.hidden = false;
    }
    var controller = new AbortController();
    pending = controller;
    fetch(fragmentUrl(), { credentials: "same-origin", signal: controller.signal })
      .then(function (answer) {
        // Signed out meanwhile: the admin answers with its login page, not the fragment.
        if (!answer.ok || answer.redirected) {
          throw new Error("dashboard answered " + answer.status);
        }
        return answer.text();
      })
      .then(function (html) {
        body.innerHTML = html;
        root.setAttribute("data-window", minutes);
        root.classList.remove("stale");
        stale.hidden = true;
      })
      .catch(function (error) {
        if (error.name !== "AbortError") {
          root.classList.add("stale");
          stale.hidden = false;
        }
      })
      .finally(function () {
        if (pending === controller) {
          pending = null;
        }
      });
  }

  toggle.addEventListener("click", function (event) {
    var link = event.target.closest("a[data-window]");
    if (!link) {
      return;
    }
    event.preventDefault();
    minutes = link.getAttribute("data-window");
    toggle.querySelectorAll("a[data-window]").forEach(function (other) {
      var chosen = other === link;
      other.classList.toggle("selected", chosen);
      if (chosen) {
        other.setAttribute("aria-current", "true");
      } else {
        other.removeAttribute("aria-current");
      }
    });
    var address = new URL(window.location.href);
    address.searchParams.set("window", minutes);
    window.history.replaceState(null, "", address.toString());
    refresh();
  });

  window.setInterval(function () {
    if (!document.hidden) {
      refresh();
    }
  }, every);
  document.addEventListener("visibilitychange", function () {
    if (!document.hidden) {
      refresh();
    }
  });
})();
