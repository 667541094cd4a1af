// A field image on a canvas with its objects drawn over it: zoom and pan to the pixel (wheel, drag, keys),
// objects selected by click, and a click-to-add mode. It knows nothing of HTTP; the page feeds it.

const COLOURS = { counted: "#00c853", notCounted: "#ff9100", added: "#00b8d4", selected: "#ffffff" };
const MAX_SCALE = 32;

function inPolygon(x, y, points) {
  let inside = false;
  for (let i = 0, j = points.length - 1; i < points.length; j = i++) {
    const [xi, yi] = points[i];
    const [xj, yj] = points[j];
    if ((yi > y) !== (yj > y) && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

export class Viewer {
  constructor(canvas, { onSelect, onAdd }) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onSelect = onSelect;
    this.onAdd = onAdd;
    this.image = null;
    this.objects = [];
    this.selected = null;
    this.show = { kept: true, rejected: true };
    this.adding = false;
    this.scale = 1;
    this.ox = 0;
    this.oy = 0;
    new ResizeObserver(() => this.resize()).observe(canvas);
    this.listen();
  }

  setImage(image) {
    this.image = image;
    this.fit();
  }

  setObjects(objects) {
    this.objects = objects;
    if (this.selected && !objects.some((o) => o.number === this.selected)) this.selected = null;
    this.draw();
  }

  resize() {
    const r = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    this.canvas.width = Math.max(1, Math.round(r.width * dpr));
    this.canvas.height = Math.max(1, Math.round(r.height * dpr));
    this.dpr = dpr;
    if (this.image && !this.placed) this.fit();
    else this.draw();
  }

  get size() { return { w: this.canvas.width / (this.dpr || 1), h: this.canvas.height / (this.dpr || 1) }; }

  fit() {
    if (!this.image) return this.draw();
    const { w, h } = this.size;
    this.scale = Math.min(w / this.image.width, h / this.image.height) || 1;
    this.ox = (w - this.image.width * this.scale) / 2;
    this.oy = (h - this.image.height * this.scale) / 2;
    this.placed = w > 1;
    this.draw();
  }

  zoomAt(factor, sx, sy) {
    const { w, h } = this.size;
    sx ??= w / 2;
    sy ??= h / 2;
    const next = Math.min(MAX_SCALE, Math.max(0.02, this.scale * factor));
    this.ox = sx - ((sx - this.ox) * next) / this.scale;
    this.oy = sy - ((sy - this.oy) * next) / this.scale;
    this.scale = next;
    this.draw();
  }

  oneToOne() { this.zoomAt(1 / this.scale); }

  pan(dx, dy) { this.ox += dx; this.oy += dy; this.draw(); }

  toImage(sx, sy) { return { x: (sx - this.ox) / this.scale, y: (sy - this.oy) / this.scale }; }

  centre() { const { w, h } = this.size; return this.toImage(w / 2, h / 2); }

  centreOn(o) {
    const { w, h } = this.size;
    if (this.scale < 2) this.scale = 2;
    this.ox = w / 2 - o.x * this.scale;
    this.oy = h / 2 - o.y * this.scale;
    this.draw();
  }

  visible(o) {
    if (o.origin === "added") return true;
    return o.origin === "kept" ? this.show.kept : this.show.rejected;
  }

  objectAt(x, y) {
    const slack = 4 / this.scale;
    let best = null;
    for (const o of this.objects) {
      if (!this.visible(o)) continue;
      const [bx, by, bw, bh] = o.bbox;
      if (x < bx - slack || y < by - slack || x > bx + bw + slack || y > by + bh + slack) continue;
      const hit = o.outline ? inPolygon(x, y, o.outline) || bw * this.scale < 12 || bh * this.scale < 12 : true;
      const d = (o.x - x) ** 2 + (o.y - y) ** 2;
      if (hit && (!best || d < best.d)) best = { o, d };
    }
    return best?.o ?? null;
  }

  select(number) {
    this.selected = number;
    this.draw();
  }

  draw() {
    const { ctx } = this;
    const dpr = this.dpr || 1;
    Object.assign(this.canvas.dataset, { scale: this.scale.toFixed(4), ox: this.ox.toFixed(1), oy: this.oy.toFixed(1) });
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#2b2b2b";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!this.image) return;
    ctx.setTransform(dpr * this.scale, 0, 0, dpr * this.scale, dpr * this.ox, dpr * this.oy);
    ctx.imageSmoothingEnabled = this.scale < 2; // past 2× the pixels show as squares
    ctx.drawImage(this.image, 0, 0);
    const px = 1 / this.scale;
    for (const o of this.objects) {
      if (!this.visible(o)) continue;
      const colour = o.origin === "added" ? COLOURS.added : o.counted ? COLOURS.counted : COLOURS.notCounted;
      const selected = o.number === this.selected;
      ctx.lineWidth = (selected ? 3.5 : o.decision ? 2.5 : 1.5) * px;
      ctx.setLineDash(o.counted ? [] : [4 * px, 3 * px]);
      ctx.strokeStyle = colour;
      ctx.beginPath();
      if (o.outline) {
        const pad = 2 * px;
        const [cx, cy] = [o.x, o.y];
        o.outline.forEach(([x, y], i) => {
          const dx = x - cx, dy = y - cy, n = Math.hypot(dx, dy) || 1;
          const [qx, qy] = [x + (dx / n) * pad, y + (dy / n) * pad]; // just outside the rod, not over it
          if (i === 0) ctx.moveTo(qx, qy); else ctx.lineTo(qx, qy);
        });
        ctx.closePath();
      } else {
        ctx.arc(o.x, o.y, Math.max(6, 8 * px), 0, 2 * Math.PI);
      }
      if (selected) {
        ctx.save();
        ctx.strokeStyle = COLOURS.selected;
        ctx.lineWidth = 6 * px;
        ctx.setLineDash([]);
        ctx.stroke();
        ctx.restore();
      }
      ctx.stroke();
    }
    ctx.setLineDash([]);
    if (this.adding) {
      const c = this.centre();
      ctx.strokeStyle = COLOURS.added;
      ctx.lineWidth = px;
      ctx.beginPath();
      ctx.moveTo(c.x - 10 * px, c.y); ctx.lineTo(c.x + 10 * px, c.y);
      ctx.moveTo(c.x, c.y - 10 * px); ctx.lineTo(c.x, c.y + 10 * px);
      ctx.stroke();
    }
  }

  listen() {
    const c = this.canvas;
    let drag = null;
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const r = c.getBoundingClientRect();
      this.zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    }, { passive: false });
    c.addEventListener("pointerdown", (e) => {
      c.setPointerCapture(e.pointerId);
      drag = { x: e.clientX, y: e.clientY, moved: 0 };
    });
    c.addEventListener("pointermove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x, dy = e.clientY - drag.y;
      drag.moved += Math.abs(dx) + Math.abs(dy);
      drag.x = e.clientX;
      drag.y = e.clientY;
      if (drag.moved > 4) this.pan(dx, dy);
    });
    c.addEventListener("pointerup", (e) => {
      const moved = drag ? drag.moved : 99;
      drag = null;
      if (moved > 4 || !this.image) return;
      const r = c.getBoundingClientRect();
      const p = this.toImage(e.clientX - r.left, e.clientY - r.top);
      if (p.x < 0 || p.y < 0 || p.x >= this.image.width || p.y >= this.image.height) return;
      if (this.adding) this.onAdd(p);
      else {
        const o = this.objectAt(p.x, p.y);
        this.select(o ? o.number : null);
        this.onSelect(o);
      }
    });
    c.addEventListener("keydown", (e) => {
      const step = 60;
      const keys = {
        "+": () => this.zoomAt(1.25), "=": () => this.zoomAt(1.25), "-": () => this.zoomAt(0.8),
        "0": () => this.fit(), "1": () => this.oneToOne(),
        ArrowLeft: () => this.pan(step, 0), ArrowRight: () => this.pan(-step, 0),
        ArrowUp: () => this.pan(0, step), ArrowDown: () => this.pan(0, -step),
      };
      if (keys[e.key] && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        keys[e.key]();
      }
    });
  }
}
