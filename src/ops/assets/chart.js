// The ready -> assigned latency over the last minutes: each snapshot's p50 and p99 (over the
// assignments of its last minute) as two lines in an SVG. Small enough not to need a library.

const SVG = 'http://www.w3.org/2000/svg';
const KEEP_MS = 10 * 60 * 1000;

export class LatencyChart {
  constructor(svg) {
    this.svg = svg;
    this.points = [];
  }

  add(snapshot) {
    const at = Date.parse(snapshot.at);
    if (snapshot.assign.samples > 0) {
      this.points.push({ at, p50: snapshot.assign.p50S, p99: snapshot.assign.p99S });
    }
    this.points = this.points.filter((p) => p.at >= at - KEEP_MS);
    this.draw(at);
  }

  draw(now) {
    const [w, h] = [300, 100];
    const top = Math.max(1, ...this.points.map((p) => p.p99));
    const x = (at) => w - ((now - at) / KEEP_MS) * w;
    const y = (s) => h - (s / top) * (h - 12);
    const line = (key) => {
      const el = document.createElementNS(SVG, 'polyline');
      el.setAttribute('class', key);
      el.setAttribute('points', this.points.map((p) => `${x(p.at).toFixed(1)},${y(p[key]).toFixed(1)}`).join(' '));
      return el;
    };
    const label = (text, lx, ly) => {
      const el = document.createElementNS(SVG, 'text');
      el.setAttribute('x', lx);
      el.setAttribute('y', ly);
      el.textContent = text;
      return el;
    };
    this.svg.replaceChildren(line('p50'), line('p99'), label(`${top.toFixed(2)} s`, 2, 9), label('10 min ago', 2, h - 2), label('now', w - 20, h - 2));
  }
}
