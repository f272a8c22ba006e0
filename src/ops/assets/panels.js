// The side panels: counters, orders by status, the orders waiting for a rider and the zones'
// owners, written from a snapshot into the elements the page declares.

import { ownerColours } from './map.js';

const $ = (id) => document.getElementById(id);

function setText(id, value) {
  $(id).textContent = value === null || value === undefined ? '–' : String(value);
}

function fillList(id, counts) {
  const list = $(id);
  list.replaceChildren();
  const entries = Object.entries(counts);
  if (entries.length === 0) {
    const none = document.createElement('dt');
    none.textContent = 'none';
    list.append(none, document.createElement('dd'));
  }
  for (const [status, n] of entries) {
    const term = document.createElement('dt');
    term.textContent = status.replaceAll('_', ' ');
    const value = document.createElement('dd');
    value.textContent = String(n);
    value.dataset.status = status;
    list.append(term, value);
  }
}

export function showCounters(snapshot) {
  const c = snapshot.counters;
  setText('riders-online', c.ridersOnline);
  setText('riders-reporting', c.ridersReporting);
  setText('offers', c.offers);
  setText('accepts', c.accepts);
  setText('timeouts', c.timeouts);
  setText('cells-count', snapshot.cells.length);
  setText('nodes', snapshot.nodes);
  setText('computed', snapshot.computedInMs);
  setText('updated-at', new Date(snapshot.at).toLocaleTimeString());
  setText('p50', snapshot.assign.p50S);
  setText('p99', snapshot.assign.p99S);
  setText('assign-samples', snapshot.assign.samples);
  fillList('open-by-status', c.openByStatus);
  fillList('finished', c.finished);
  const r = snapshot.riders;
  $('sample-note').textContent = r.shown < r.total
    ? `The map shows ${r.shown} of ${r.total} riders: an even sample (ops.max_riders).`
    : `The map shows all ${r.total} riders.`;
}

// The latest batched windows, newest first; the panel shows only when dispatch is batched.
export function showWindows(snapshot) {
  const windows = snapshot.windows ?? [];
  $('windows-panel').hidden = windows.length === 0;
  const body = $('windows').tBodies[0];
  body.replaceChildren();
  for (const w of [...windows].reverse()) {
    const row = body.insertRow();
    const cells = [
      new Date(w.at).toLocaleTimeString(),
      w.orders,
      w.matched,
      w.meanPickupM,
      w.overBudget ? `${w.solveMs} (nearest-first)` : w.solveMs,
    ];
    for (const value of cells) {
      row.insertCell().textContent = String(value);
    }
  }
}

export function showWaiting(snapshot) {
  setText('waiting-count', snapshot.waitingTotal);
  const list = $('waiting');
  list.replaceChildren();
  for (const order of snapshot.waiting) {
    const item = document.createElement('li');
    item.dataset.orderId = order.orderId;
    item.textContent = `${order.restaurantName}: waiting ${Math.round(order.waitedS)} s`;
    list.append(item);
  }
  if (snapshot.waitingTotal > snapshot.waiting.length) {
    const more = document.createElement('li');
    more.className = 'hint';
    more.textContent = `and ${snapshot.waitingTotal - snapshot.waiting.length} more`;
    list.append(more);
  }
}

/** The legend of the zones' outlines: each owning node, its colour and how many shown zones it owns. */
export function showOwners(snapshot) {
  const list = $('zone-owners');
  list.replaceChildren();
  const colours = ownerColours(snapshot.zones);
  const owned = (owner) => snapshot.zones.filter((z) => z.owner === owner).length;
  const entries = [...colours].map(([owner, colour]) => [owner, colour, owned(owner)]);
  const moving = owned(null);
  if (moving > 0) entries.push(['moving', null, moving]);
  for (const [owner, colour, n] of entries) {
    const item = document.createElement('span');
    item.className = colour ? 'zone-owner' : 'zone-owner moving';
    if (colour) item.style.borderColor = colour;
    item.dataset.owner = owner;
    item.textContent = `${owner} ${n}`;
    list.append(item);
  }
}
