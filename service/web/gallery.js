// The slide's ranked gallery: every candidate across its fields, best object-filter score first, as thumbnails a
// technician accepts or rejects from the keyboard (GET /v1/slides/{id}/gallery, the review routes).
import { call, json, sendJson } from "./api.js";

const PAGE = 24;

export class Gallery {
  /**
   * @param {HTMLElement} grid the listbox the tiles go in
   * @param {object} hooks onReviewed(result, item) after a decision; onOpen(fieldIndex, number) to show it in the viewer;
   *   reviewer() the name the page sends; say(message) for errors; count(text) for the header
   */
  constructor(grid, hooks) {
    this.grid = grid;
    this.hooks = hooks;
    this.slideId = null;
    this.items = [];
    this.total = 0;
    this.reviewedElsewhere = 0;
    this.selected = 0;
    this.urls = [];
    grid.addEventListener("keydown", (e) => this.key(e));
  }

  path(item) {
    return `/v1/slides/${encodeURIComponent(this.slideId)}/fields/${item.field_index}/objects/${item.number}`;
  }

  async load(slideId, limit = PAGE) {
    this.slideId = slideId;
    const body = await json(`/v1/slides/${encodeURIComponent(slideId)}/gallery?limit=${limit}`);
    this.items = body.items;
    this.total = body.candidates;
    this.selected = Math.min(this.selected, Math.max(this.items.length - 1, 0));
    this.reviewedElsewhere = body.reviewed - this.items.filter((i) => i.decision).length;
    this.header();
    this.render();
    await this.thumbnails();
  }

  header() {
    const reviewed = this.reviewedElsewhere + this.items.filter((i) => i.decision).length;
    this.hooks.count(`${this.items.length} of ${this.total} candidates, best score first · ${reviewed} reviewed`);
  }

  more() {
    return this.load(this.slideId, Math.min(this.items.length + PAGE, 500));
  }

  render() {
    for (const url of this.urls) URL.revokeObjectURL(url);
    this.urls = [];
    const tiles = this.items.map((item, i) => {
      const tile = document.createElement("div");
      tile.className = "tile";
      tile.setAttribute("role", "option");
      tile.dataset.field = item.field_index;
      tile.dataset.number = item.number;
      tile.dataset.decision = item.decision || "none";
      tile.setAttribute("aria-selected", String(i === this.selected));
      const img = Object.assign(document.createElement("img"), { alt: `${item.field_name} object ${item.number}` });
      img.width = img.height = 96;
      const score = item.score == null ? "no score" : item.score.toFixed(2);
      const decision = item.decision ? ` · ${item.decision}ed` : "";
      const caption = Object.assign(document.createElement("span"), {
        className: "caption",
        textContent: `#${item.rank} ${score} ${item.origin}${decision}`,
      });
      tile.title = `${item.field_name}, object ${item.number} (Enter opens it in the viewer)`;
      tile.append(img, caption);
      tile.addEventListener("click", () => { this.select(i); this.grid.focus(); });
      tile.addEventListener("dblclick", () => this.hooks.onOpen(item.field_index, item.number));
      return tile;
    });
    this.grid.replaceChildren(...tiles);
  }

  async thumbnails() {
    const tiles = [...this.grid.children];
    for (const [i, item] of this.items.entries()) {
      if (!item.thumbnail_url || !tiles[i]) continue;
      try {
        const blob = await (await call(`${item.thumbnail_url}?size=96`)).blob();
        const url = URL.createObjectURL(blob);
        this.urls.push(url);
        tiles[i].querySelector("img").src = url;
      } catch (error) {
        tiles[i].querySelector("img").alt = `no image: ${error.message}`;
      }
    }
  }

  select(i) {
    if (!this.items.length) return;
    this.selected = (i + this.items.length) % this.items.length;
    for (const [k, tile] of [...this.grid.children].entries()) tile.setAttribute("aria-selected", String(k === this.selected));
    this.grid.children[this.selected]?.scrollIntoView({ block: "nearest" });
  }

  async decide(decision, index = this.selected) {
    const item = this.items[index];
    if (!item) return;
    try {
      const result = await sendJson(`${this.path(item)}/review`, "PUT", { decision, reviewer: this.hooks.reviewer() });
      item.decision = result.object.decision;
      const tile = this.grid.children[index];
      if (tile) {
        tile.dataset.decision = item.decision || "none";
        const caption = tile.querySelector(".caption");
        caption.textContent = caption.textContent.replace(/ · \w+ed$/, "") + (item.decision ? ` · ${item.decision}ed` : "");
      }
      this.header();
      this.hooks.onReviewed(result, item);
    } catch (error) {
      this.hooks.say(`Review: ${error.message}`);
    }
  }

  /** Reject every shown candidate not decided yet: what a person does who has looked and seen no bacillus. */
  async rejectAll() {
    for (const [i, item] of this.items.entries()) if (!item.decision) await this.decide("reject", i);
  }

  key(e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const columns = Math.max(1, Math.round(this.grid.clientWidth / 112));
    const keys = {
      ArrowRight: () => this.select(this.selected + 1), n: () => this.select(this.selected + 1),
      ArrowLeft: () => this.select(this.selected - 1), p: () => this.select(this.selected - 1),
      ArrowDown: () => this.select(this.selected + columns), ArrowUp: () => this.select(this.selected - columns),
      a: () => this.decide("accept"), r: () => this.decide("reject"), u: () => this.decide(null),
      Enter: () => { const item = this.items[this.selected]; if (item) this.hooks.onOpen(item.field_index, item.number); },
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); }
  }
}
