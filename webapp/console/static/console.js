// Keeps the queue current without a reload: every data-interval ms, fetch the element's
// data-poll URL (an HTML fragment) and swap it in, keeping the rows ticked for bulk close.
// A 401 means the session ended: reload, which lands on the login page.
document.addEventListener("DOMContentLoaded", function () {
  document.querySelectorAll("[data-poll]").forEach(function (el) {
    var every = parseInt(el.dataset.interval || "5000", 10);
    var last = null;  // the last fragment swapped in: an unchanged queue is left alone
    setInterval(function () {
      fetch(el.dataset.poll, { headers: { "X-Console-Fragment": "1" }, credentials: "same-origin" })
        .then(function (r) {
          if (r.status === 401) { window.location.reload(); return null; }
          return r.ok ? r.text() : null;
        })
        .then(function (html) {
          if (html === null || html === last) { return; }
          last = html;
          var ticked = Array.from(el.querySelectorAll("input[type=checkbox]:checked")).map(function (c) { return c.value; });
          el.innerHTML = html;
          ticked.forEach(function (id) {
            var box = el.querySelector("input[type=checkbox][value='" + id + "']");
            if (box) { box.checked = true; }
          });
        })
        .catch(function () {});
    }, every);
  });
});
