// Vigil console: live updates and keyboard triage on top of plain forms.
// Everything here is optional: without it, the pages and forms work.
"use strict";
(function () {
  const csrf = document.body.dataset.csrf || "";
  const mayTriage = document.body.dataset.mayTriage === "true";
  const rows = document.getElementById("rows");
  const live = document.getElementById("live");
  let selected = -1;
  let selectedId = null;

  function rowList() { return rows ? Array.from(rows.querySelectorAll("tr[data-id]")) : []; }
  function select(i) {
    const list = rowList();
    if (list.length === 0) { selected = -1; selectedId = null; return; }
    selected = Math.max(0, Math.min(i, list.length - 1));
    list.forEach((r, j) => { r.classList.toggle("selected", j === selected); r.setAttribute("aria-selected", j === selected ? "true" : "false"); });
    const row = list[selected];
    selectedId = row.dataset.id;
    row.focus({ preventScroll: true });
    row.scrollIntoView({ block: "nearest" });
  }
  function current() { const list = rowList(); return selected >= 0 ? list[selected] : null; }

  // Live: the server says when groups change; swap in the new rows and keep
  // the selection and ticks.
  async function refresh() {
    if (!rows) return;
    const ticked = new Set(Array.from(rows.querySelectorAll("input[name=id]:checked")).map((c) => c.value));
    const res = await fetch(rows.dataset.src, { credentials: "same-origin" });
    if (!res.ok) return;
    const before = new Set(rowList().map((r) => r.dataset.id));
    rows.innerHTML = await res.text();
    rows.querySelectorAll("input[name=id]").forEach((c) => { c.checked = ticked.has(c.value); });
    const list = rowList();
    const fresh = list.filter((r) => !before.has(r.dataset.id)).length;
    if (live && fresh > 0) live.textContent = fresh + " new alert group" + (fresh > 1 ? "s" : "");
    const i = list.findIndex((r) => r.dataset.id === selectedId);
    if (i >= 0) select(i); else if (selectedId !== null) select(Math.min(selected, list.length - 1));
  }
  if (rows && window.EventSource) {
    const es = new EventSource("/events");
    es.addEventListener("changed", () => { refresh(); });
  }

  async function act(id, fields) {
    const body = new URLSearchParams(Object.assign({ csrf_token: csrf }, fields));
    const res = await fetch("/alerts/" + encodeURIComponent(id) + "/action", {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
    });
    if (live) live.textContent = res.ok ? (fields.action + " done") : ("refused: " + res.status);
    await refresh();
  }

  function openDialog(name, row) {
    const d = document.getElementById(name + "-dialog");
    if (!d || !row) return;
    const form = d.querySelector("form");
    form.action = "/alerts/" + encodeURIComponent(row.dataset.id) + "/action";
    d.querySelector(".target").textContent = row.dataset.rule + " on " + row.dataset.host;
    const mr = d.querySelector(".m-rule"); if (mr) mr.value = "rule=" + row.dataset.rule;
    const mh = d.querySelector(".m-host"); if (mh) mh.value = "host=" + row.dataset.host;
    d.showModal();
    const first = d.querySelector("select, input:not([type=hidden])");
    if (first) first.focus();
  }
  document.querySelectorAll("dialog .cancel").forEach((b) => b.addEventListener("click", () => b.closest("dialog").close()));

  // On a group's page: a acknowledges it, r and s go to its forms.
  const group = document.getElementById("group");
  function onGroupPage(e) {
    const id = group.dataset.id;
    switch (e.key) {
      case "a":
        if (!mayTriage) return false;
        act(id, { action: "ack" }).then(() => window.location.reload());
        return true;
      case "r": { const f = document.getElementById("end-reason"); if (!f) return false; f.focus(); return true; }
      case "s": { const f = document.getElementById("silence-reason"); if (!f) return false; f.focus(); return true; }
      default: return false;
    }
  }

  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const t = e.target;
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA" || t.isContentEditable)) return;
    if (document.querySelector("dialog[open]")) return;
    if (group && !rows) { if (onGroupPage(e)) e.preventDefault(); return; }
    if (!rows) return;
    const row = current();
    switch (e.key) {
      case "j": select(selected + 1); break;
      case "k": select(selected < 0 ? 0 : selected - 1); break;
      case "Enter": case "o": if (row) window.location = "/alerts/" + encodeURIComponent(row.dataset.id); else return; break;
      case "x": if (row) { const c = row.querySelector("input[name=id]"); if (c) c.checked = !c.checked; } break;
      case "a": if (row && mayTriage) act(row.dataset.id, { action: "ack" }); else return; break;
      case "r": if (row && mayTriage) openDialog("resolve", row); else return; break;
      case "s": if (row && mayTriage) openDialog("silence", row); else return; break;
      default: return;
    }
    e.preventDefault();
  });
})();
