/* bench's web board: the sortable, searchable board table (DataTables) with its filters kept in the URL's
   #fragment, and the Plotly figures whose data the page carries inline (written by bench/site.py). */
(function () {
  "use strict";

  // The view (search text, filters, sort) lives in the #fragment: a copied link shows the same view, and
  // changing the fragment is allowed for pages opened from file:// too.
  function readState() {
    return new URLSearchParams(window.location.hash.replace(/^#/, ""));
  }

  function writeState(state) {
    var text = state.toString();
    history.replaceState(null, "", text ? "#" + text : window.location.pathname + window.location.search);
  }

  function columnIndex(table, key) {
    return table.columns().header().toArray().findIndex(function (th) { return th.dataset.key === key; });
  }

  function exactly(value) {  // a filter matches the whole cell's data-search text, not a part of it
    return value ? "^" + window.dt_for_itables.jQuery.fn.dataTable.util.escapeRegex(value) + "$" : "";
  }

  function setUpBoard() {
    var element = document.getElementById("board");
    if (!element || !window.dt_for_itables) return;
    var $ = window.dt_for_itables.jQuery;
    var state = readState();
    var table = $(element).DataTable({paging: false, order: [], autoWidth: false, info: true,
                                      language: {search: "Search:"}});
    var selects = Array.prototype.slice.call(document.querySelectorAll(".filters select"));
    selects.forEach(function (select) {
      var key = select.dataset.column;
      var wanted = state.get(key) || "";
      if (Array.prototype.some.call(select.options, function (o) { return o.value === wanted; })) select.value = wanted;
      table.column(columnIndex(table, key)).search(exactly(select.value), true, false);
      select.addEventListener("change", function () {
        table.column(columnIndex(table, key)).search(exactly(select.value), true, false).draw();
      });
    });
    if (state.get("q")) table.search(state.get("q"));
    var order = (state.get("sort") || "").split(".");
    var sortIndex = columnIndex(table, order[0]);
    if (sortIndex >= 0) table.order([[sortIndex, order[1] === "desc" ? "desc" : "asc"]]);
    table.draw();
    table.on("draw", function () {
      var next = new URLSearchParams();
      if (table.search()) next.set("q", table.search());
      selects.forEach(function (select) { if (select.value) next.set(select.dataset.column, select.value); });
      var sorted = table.order()[0];
      if (sorted) next.set("sort", table.column(sorted[0]).header().dataset.key + "." + sorted[1]);
      writeState(next);
    });
  }

  function drawFigures() {
    if (!window.Plotly) return;
    document.querySelectorAll('script[type="application/json"][id$="-figure"]').forEach(function (script) {
      var target = document.getElementById(script.id.replace(/-figure$/, ""));
      if (!target) return;
      var figure = JSON.parse(script.textContent);
      window.Plotly.newPlot(target, figure.data, figure.layout, {displaylogo: false, responsive: true});
      // A point that names an entry's page (customdata) opens it when clicked.
      target.on("plotly_click", function (event) {
        var point = event.points && event.points[0];
        if (point && typeof point.customdata === "string") window.location.href = point.customdata;
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setUpBoard();
    drawFigures();
  });
})();
