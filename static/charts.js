// A small line chart in SVG for the plugin console: a fixed window of
// points, each series scaled to the window's largest value. No library.

const SVG = "http://www.w3.org/2000/svg";

export class LineChart {
  /**
   * @param {HTMLElement} parent where the chart goes
   * @param {{title: string, unit: string, series: {key: string, label: string, color: string}[], points?: number}} spec
   */
  constructor(parent, spec) {
    this.spec = spec;
    this.points = spec.points ?? 60;
    this.data = spec.series.map(() => []);
    this.root = document.createElement("figure");
    this.root.className = "chart";
    const caption = document.createElement("figcaption");
    caption.textContent = spec.title;
    this.values = spec.series.map((s) => {
      const value = document.createElement("span");
      value.className = "value";
      value.dataset.series = s.key;
      value.style.color = s.color;
      value.textContent = `${s.label} –`;
      caption.append(" ", value);
      return value;
    });
    this.svg = document.createElementNS(SVG, "svg");
    this.svg.setAttribute("viewBox", `0 0 ${this.points - 1} 100`);
    this.svg.setAttribute("preserveAspectRatio", "none");
    this.svg.setAttribute("role", "img");
    this.svg.setAttribute("aria-label", spec.title);
    this.lines = spec.series.map((s) => {
      const line = document.createElementNS(SVG, "polyline");
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", s.color);
      line.setAttribute("stroke-width", "2");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      line.dataset.series = s.key;
      this.svg.append(line);
      return line;
    });
    this.root.append(caption, this.svg);
    parent.append(this.root);
  }

  /** Adds one sample: an object with a number per series key. */
  push(sample) {
    this.spec.series.forEach((s, i) => {
      const series = this.data[i];
      series.push(Number(sample[s.key]) || 0);
      if (series.length > this.points) series.shift();
    });
    this.draw();
  }

  clear() {
    this.data = this.spec.series.map(() => []);
    this.draw();
    this.values.forEach((v, i) => (v.textContent = `${this.spec.series[i].label} –`));
  }

  draw() {
    const max = Math.max(1e-9, ...this.data.flat());
    this.data.forEach((series, i) => {
      const offset = this.points - series.length;
      const points = series.map((v, x) => `${x + offset},${(100 - (v / max) * 95).toFixed(2)}`);
      this.lines[i].setAttribute("points", points.join(" "));
      const last = series.at(-1);
      if (last !== undefined) {
        const shown = Number.isInteger(last) ? last : last.toFixed(last < 10 ? 2 : 1);
        this.values[i].textContent = `${this.spec.series[i].label} ${shown}${this.spec.unit}`;
        this.values[i].dataset.value = String(last);
      }
    });
  }
}
