// The page's wiring: the session (a token from the URL's fragment, a pasted one, or this tab's
// storage), the first paint from GET /api/admin/ops, then ops:snapshot events over /ws.

import { CityMap } from './map.js';
import { showCounters, showOwners, showWaiting, showWindows } from './panels.js';
import { LatencyChart } from './chart.js';

const KEY = 'tomato.ops.token';
const $ = (id) => document.getElementById(id);

/** A token given as `/ops#token=<JWT>`, taken out of the address bar at once. */
function fragmentToken() {
  const found = location.hash.match(/token=([^&]+)/);
  if (!found) return null;
  history.replaceState(null, '', location.pathname + location.search);
  return decodeURIComponent(found[1]);
}

function showSignIn(message) {
  sessionStorage.removeItem(KEY);
  $('app').hidden = true;
  $('signin').hidden = false;
  $('signin-error').textContent = message || '';
}

async function firstPaint(token) {
  const response = await fetch('/api/admin/ops', { headers: { Authorization: `Bearer ${token}` } });
  if (response.ok) return { snapshot: await response.json() };
  let message = `HTTP ${response.status}`;
  try {
    message = (await response.json()).error.message;
  } catch {
    // The status says enough.
  }
  if (response.status === 403) return { error: `This token is not an admin's: ${message}` };
  return { error: `Sign-in refused: ${message}` };
}

function setStatus(text, kind) {
  $('status').textContent = text;
  $('status').className = `status ${kind}`;
}

/** Keeps one /ws connection subscribed to ops:snapshot, reconnecting with a growing pause. */
function listen(token, render) {
  let pause = 1000;
  let ended = false;
  const connect = () => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const socket = new WebSocket(`${scheme}://${location.host}/ws?token=${encodeURIComponent(token)}`);
    const subscribe = () => socket.send(JSON.stringify({ event: 'ops:subscribe', id: 1 }));
    // Subscribing again is harmless, and it keeps the node from closing an idle connection.
    let keepalive = null;
    socket.onopen = () => {
      pause = 1000;
      subscribe();
      keepalive = setInterval(subscribe, 25000);
    };
    socket.onmessage = (message) => {
      const frame = JSON.parse(message.data);
      if (frame.event === 'ops:snapshot') {
        setStatus('live', 'live');
        render(frame.data);
      } else if (frame.event === 'session:ended') {
        ended = true;
        showSignIn(`Signed out: ${frame.data.reason}`);
      } else if (frame.event === 'ack' && frame.data.error) {
        ended = true;
        socket.close();
        showSignIn(frame.data.error.message);
      }
    };
    socket.onclose = () => {
      clearInterval(keepalive);
      if (ended) return;
      setStatus('reconnecting', 'down');
      setTimeout(connect, pause);
      pause = Math.min(pause * 2, 10000);
    };
  };
  connect();
}

async function start(token) {
  const { snapshot, error } = await firstPaint(token);
  if (error) {
    showSignIn(error);
    return;
  }
  sessionStorage.setItem(KEY, token);
  $('signin').hidden = true;
  $('app').hidden = false;
  const map = new CityMap($('map'), { cursor: $('cursor'), scaleBar: $('scale-bar'), scaleLabel: $('scale-label') });
  const chart = new LatencyChart($('chart'));
  const render = (s) => {
    map.show(s);
    chart.add(s);
    showCounters(s);
    showWaiting(s);
    showWindows(s);
    showOwners(s);
  };
  render(snapshot);
  listen(token, render);
}

$('signin-form').addEventListener('submit', (e) => {
  e.preventDefault();
  start($('token').value.trim());
});
$('signout').addEventListener('click', () => {
  showSignIn('');
  location.reload();
});

const token = fragmentToken() || sessionStorage.getItem(KEY);
if (token) start(token); else showSignIn('');
