// Sort the summary table by the clicked column (numbers numerically, empty cells last).
(function () {
  var table = document.getElementById("runs-table");
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    if (!th.classList.contains("sortable")) return;
    th.tabIndex = 0;
    var sort = function () {
      var asc = th.getAttribute("aria-sort") !== "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", asc ? "ascending" : "descending");
      var num = th.dataset.type === "number", body = table.tBodies[0];
      var rows = Array.prototype.slice.call(body.rows);
      var key = function (r) { return r.cells[col].dataset.sort || ""; };
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === "" || y === "") return (x === "") - (y === "");
        var c = num ? parseFloat(x) - parseFloat(y) : x.localeCompare(y, undefined, {numeric: true});
        return asc ? c : -c;
      });
      rows.forEach(function (r) { body.appendChild(r); });
    };
    th.addEventListener("click", sort);
    th.addEventListener("keydown", function (e) { if (e.key === "Enter" || e.key === " ") { e.preventDefault(); sort(); } });
  });
})();
