// The city on a canvas, in Web Mercator (so a base map's tiles line up): cells shaded by their
// demand ratio, zones outlined in their owning node's colour, riders as points, waiting orders
// as squares; a scale bar, north up, and the
// coordinates under the pointer. Drag to pan, wheel to zoom. The cells' corners come from the
// node (H3), so no geometry is computed here beyond the projection.

const TILE = 256;

/** [lat, lon] -> the unit square of Web Mercator. */
function toWorld(lat, lon) {
  const s = Math.sin((Math.max(-85, Math.min(85, lat)) * Math.PI) / 180);
  return [(lon + 180) / 360, 0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)];
}

function fromWorld(x, y) {
  const lat = (Math.atan(Math.sinh(Math.PI * (1 - 2 * y))) * 180) / Math.PI;
  return [lat, x * 360 - 180];
}

/** Shade of a cell: green with riders to spare, yellow when even, red when riders are short. */
function shade(ratio) {
  if (ratio <= 0) return 'rgba(46, 160, 67, 0.35)';
  if (ratio < 1) return 'rgba(160, 190, 40, 0.45)';
  if (ratio < 2) return 'rgba(230, 180, 20, 0.55)';
  return 'rgba(210, 40, 40, 0.65)';
}

/** Outline colours of the nodes, told apart at a glance (a ninth node reuses the first). */
const NODE_COLOURS = ['#7b1fa2', '#ef6c00', '#00838f', '#c2185b', '#558b2f', '#283593', '#6d4c41', '#f9a825'];
/** A zone whose lease is moving. */
const UNOWNED = '#616161';

/** Each owner of the snapshot's zones and its colour, owners in name order (stable per city). */
export function ownerColours(zones) {
  const owners = [...new Set(zones.map((z) => z.owner).filter((o) => o !== null))].sort();
  return new Map(owners.map((owner, i) => [owner, NODE_COLOURS[i % NODE_COLOURS.length]]));
}

/** A round distance (1, 2 or 5 times a power of ten) of at most `max` metres. */
function roundDistance(max) {
  const power = 10 ** Math.floor(Math.log10(max));
  return [5, 2, 1].map((f) => f * power).find((d) => d <= max) ?? power;
}

export class CityMap {
  constructor(canvas, { cursor, scaleBar, scaleLabel }) {
    this.canvas = canvas;
    this.cursor = cursor;
    this.scaleBar = scaleBar;
    this.scaleLabel = scaleLabel;
    this.center = null; // world coordinates
    this.zoom = 13;
    this.tiles = new Map();
    this.snapshot = null;
    this.listen();
  }

  get size() {
    return TILE * 2 ** this.zoom;
  }

  project(lat, lon) {
    const [x, y] = toWorld(lat, lon);
    return [(x - this.center[0]) * this.size + this.width / 2, (y - this.center[1]) * this.size + this.height / 2];
  }

  unproject(px, py) {
    return fromWorld(this.center[0] + (px - this.width / 2) / this.size, this.center[1] + (py - this.height / 2) / this.size);
  }

  /** Frames everything the snapshot holds. */
  fit(snapshot) {
    const corners = snapshot.cells.flatMap((c) => c.boundary);
    const points = corners.concat(snapshot.riders.points.map((p) => [p[0], p[1]]));
    if (points.length === 0) return false;
    const world = points.map(([lat, lon]) => toWorld(lat, lon));
    const xs = world.map((w) => w[0]);
    const ys = world.map((w) => w[1]);
    const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    this.center = [(x0 + x1) / 2, (y0 + y1) / 2];
    const span = Math.max(x1 - x0, y1 - y0, 1e-6);
    const fitZoom = Math.log2((0.85 * Math.min(this.width, this.height)) / (span * TILE));
    this.zoom = Math.max(3, Math.min(18, fitZoom));
    return true;
  }

  show(snapshot) {
    this.snapshot = snapshot;
    this.resize();
    if (!this.center && !this.fit(snapshot)) return;
    this.draw();
  }

  resize() {
    const ratio = window.devicePixelRatio || 1;
    this.width = this.canvas.clientWidth;
    this.height = this.canvas.clientHeight;
    this.canvas.width = Math.round(this.width * ratio);
    this.canvas.height = Math.round(this.height * ratio);
    this.ctx = this.canvas.getContext('2d');
    this.ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  }

  draw() {
    const { ctx, snapshot } = this;
    if (!snapshot || !this.center) return;
    ctx.fillStyle = '#e9e4d8';
    ctx.fillRect(0, 0, this.width, this.height);
    if (snapshot.tileUrl) this.drawTiles(snapshot.tileUrl);
    for (const cell of snapshot.cells) {
      this.trace(cell.boundary);
      ctx.fillStyle = shade(cell.demandRatio);
      ctx.fill();
      ctx.strokeStyle = 'rgba(0, 0, 0, 0.15)';
      ctx.stroke();
    }
    // Zones over the cells, dashed while their lease moves.
    const colours = ownerColours(snapshot.zones);
    ctx.lineWidth = 2;
    for (const zone of snapshot.zones) {
      this.trace(zone.boundary);
      ctx.setLineDash(zone.owner === null ? [4, 4] : []);
      ctx.strokeStyle = zone.owner === null ? UNOWNED : colours.get(zone.owner);
      ctx.stroke();
    }
    ctx.setLineDash([]);
    ctx.lineWidth = 1;
    for (const [lat, lon, available] of snapshot.riders.points) {
      const [x, y] = this.project(lat, lon);
      ctx.fillStyle = available ? '#1565c0' : '#888';
      ctx.fillRect(x - 1.5, y - 1.5, 3, 3);
    }
    // Outlined, so a rider waiting at the same shop still shows through.
    ctx.strokeStyle = '#000';
    ctx.lineWidth = 2;
    for (const order of snapshot.waiting) {
      const [x, y] = this.project(order.lat, order.lon);
      ctx.strokeRect(x - 5, y - 5, 10, 10);
    }
    ctx.lineWidth = 1;
    this.drawScale();
  }

  /** Starts a closed path along `[lat, lon]` corners. */
  trace(corners) {
    const { ctx } = this;
    ctx.beginPath();
    corners.forEach(([lat, lon], i) => {
      const [x, y] = this.project(lat, lon);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.closePath();
  }

  drawTiles(template) {
    const z = Math.max(0, Math.min(19, Math.round(this.zoom)));
    const n = 2 ** z;
    const tilePx = TILE * 2 ** (this.zoom - z);
    const left = this.center[0] * n - this.width / 2 / tilePx;
    const top = this.center[1] * n - this.height / 2 / tilePx;
    for (let tx = Math.floor(left); tx < left + this.width / tilePx; tx += 1) {
      for (let ty = Math.max(0, Math.floor(top)); ty < Math.min(n, top + this.height / tilePx); ty += 1) {
        const url = template.replace('{z}', z).replace('{x}', ((tx % n) + n) % n).replace('{y}', ty);
        let image = this.tiles.get(url);
        if (!image) {
          image = new Image();
          image.onload = () => this.draw();
          image.src = url;
          this.tiles.set(url, image);
        }
        if (image.complete && image.naturalWidth > 0) {
          this.ctx.drawImage(image, (tx - left) * tilePx, (ty - top) * tilePx, tilePx, tilePx);
        }
      }
    }
  }

  drawScale() {
    const [lat] = this.unproject(this.width / 2, this.height / 2);
    const metresPerPixel = (40075016.686 * Math.cos((lat * Math.PI) / 180)) / this.size;
    const metres = roundDistance(metresPerPixel * 120);
    this.scaleBar.style.width = `${Math.round(metres / metresPerPixel)}px`;
    this.scaleLabel.textContent = metres >= 1000 ? `${metres / 1000} km` : `${metres} m`;
  }

  listen() {
    let dragging = null;
    this.canvas.addEventListener('pointerdown', (e) => {
      dragging = [e.clientX, e.clientY];
      this.canvas.setPointerCapture(e.pointerId);
    });
    this.canvas.addEventListener('pointerup', () => { dragging = null; });
    this.canvas.addEventListener('pointermove', (e) => {
      if (!this.center) return;
      if (dragging) {
        this.center = [
          this.center[0] - (e.clientX - dragging[0]) / this.size,
          this.center[1] - (e.clientY - dragging[1]) / this.size,
        ];
        dragging = [e.clientX, e.clientY];
        this.draw();
      }
      const [lat, lon] = this.unproject(e.offsetX, e.offsetY);
      this.cursor.textContent = `${lat.toFixed(5)}, ${lon.toFixed(5)}`;
    });
    this.canvas.addEventListener('wheel', (e) => {
      if (!this.center) return;
      e.preventDefault();
      this.zoom = Math.max(3, Math.min(19, this.zoom - Math.sign(e.deltaY) * 0.25));
      this.draw();
    }, { passive: false });
    window.addEventListener('resize', () => { this.resize(); this.draw(); });
  }
}
