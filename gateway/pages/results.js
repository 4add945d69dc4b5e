// The results page of one job: asks for the API key once, then reads the job through the
// /v1 API and draws it. Everything shown comes from the API's JSON and goes into the page
// as text (never as markup), so a transcript line cannot become script.
// The key lives in sessionStorage (this tab only); it is never put in a URL or logged.
"use strict";

(() => {
  const KEY_STORAGE = "vidinsight.apiKey";
  const POLL_INTERVAL_MS = 2000;
  const STAGE_ORDER = ["ingest", "preprocess", "scenes", "transcribe", "analyse", "synthesise", "notify"];
  const CHAPTER_COLOURS = ["#3b82c4", "#e0823d", "#4a9e6b", "#9a5bb8", "#c9554e", "#3a9ea5", "#b8913a"];
  const THUMB_WIDTH_PX = 136;
  const THUMB_HEIGHT_PX = 77;
  const THUMB_GAP_PX = 8;
  const SVG_NS = "http://www.w3.org/2000/svg";

  const byId = (id) => document.getElementById(id);
  const jobId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
  const jobPath = `/v1/jobs/${encodeURIComponent(jobId)}`;

  let generation = 0; // bumped on every new key or reset, so stale answers are dropped
  let pollTimer = null;
  let objectUrls = [];
  let laidOut = null; // {scenes, duration} of the drawn timeline, for re-layout on resize

  class ApiError extends Error {
    constructor(status, reason, message) {
      super(message);
      this.status = status;
      this.reason = reason;
    }
  }

  // ---- talking to the API -------------------------------------------------------------

  async function api(path, key, as = "json") {
    let response;
    try {
      response = await fetch(path, {
        headers: { Authorization: `Bearer ${key}` },
        cache: "no-store",
        credentials: "omit",
        referrerPolicy: "no-referrer",
      });
    } catch (error) {
      throw new ApiError(0, "unreachable", "The gateway could not be reached.");
    }
    if (!response.ok) throw await apiError(response);
    return as === "blob" ? response.blob() : response.json();
  }

  // The API's one error shape, {"error": {"reason", "message"}}; anything else by status.
  async function apiError(response) {
    let reason = `http_${response.status}`;
    let message = response.statusText || "The request failed.";
    try {
      const body = await response.json();
      if (body && body.error) {
        reason = body.error.reason || reason;
        message = body.error.message || message;
      }
    } catch (ignored) {
      // not JSON: keep the status line
    }
    return new ApiError(response.status, reason, message);
  }

  // ---- the flow: key, status (polled until done), results -----------------------------

  function start() {
    byId("job-id").textContent = jobId;
    byId("key-form").addEventListener("submit", onKeySubmitted);
    byId("forget-key").addEventListener("click", forgetKey);
    window.addEventListener("resize", relayoutTimeline);
    const key = sessionStorage.getItem(KEY_STORAGE);
    if (key) follow(key);
    else askForKey();
  }

  function onKeySubmitted(event) {
    event.preventDefault();
    const input = byId("api-key");
    const key = input.value.trim();
    input.value = "";
    if (!key) return;
    sessionStorage.setItem(KEY_STORAGE, key);
    follow(key);
  }

  function askForKey() {
    byId("key-form").hidden = false;
    byId("forget-key").hidden = true;
    byId("api-key").focus();
  }

  function forgetKey() {
    sessionStorage.removeItem(KEY_STORAGE);
    reset();
    showMessage("", null);
    askForKey();
  }

  // Hide every piece of data shown so far and forget pending work.
  function reset() {
    generation += 1;
    clearTimeout(pollTimer);
    byId("results").hidden = true;
    byId("progress-panel").hidden = true;
    objectUrls.forEach((url) => URL.revokeObjectURL(url));
    objectUrls = [];
    laidOut = null;
    for (const id of ["keyframe-lane", "chapter-bands", "time-axis", "chapter-list", "transcript",
      "keywords", "action-items", "cost-chart", "stage-list"]) {
      byId(id).replaceChildren();
    }
  }

  function follow(key) {
    reset();
    const mine = generation;
    byId("key-form").hidden = true;
    byId("forget-key").hidden = false;
    showMessage("Loading the job…", "info");
    poll(key, mine);
  }

  async function poll(key, mine) {
    try {
      const job = await api(jobPath, key);
      if (mine !== generation) return;
      if (job.status === "completed") {
        await showResults(key, mine);
        return;
      }
      showProgress(job);
      if (job.status === "queued" || job.status === "running") {
        pollTimer = setTimeout(() => poll(key, mine), POLL_INTERVAL_MS);
      }
    } catch (error) {
      if (mine === generation) fail(error);
    }
  }

  function fail(error) {
    reset();
    const status = error instanceof ApiError ? error.status : 0;
    if (status === 401) {
      sessionStorage.removeItem(KEY_STORAGE);
      showMessage(`Key refused: ${error.message} (${error.reason}).`, "error");
      askForKey();
    } else if (status === 404) {
      showMessage(`Job not found: no job ${jobId} belongs to this key's customer.`, "error");
    } else {
      const reason = error.reason ? ` (${error.reason})` : "";
      showMessage(`Could not load the job: ${error.message}${reason}`, "error");
    }
  }

  function showMessage(text, kind) {
    const box = byId("message");
    box.textContent = text;
    box.className = kind ? `notice ${kind}` : "notice";
    box.hidden = !text;
  }

  // ---- a job still on its way ---------------------------------------------------------

  function showProgress(job) {
    const ended = job.status === "failed" || job.status === "cancelled";
    showMessage(ended ? jobEndedText(job) : "", ended ? "error" : null);
    byId("job-status").textContent = job.status;
    byId("progress-text").textContent = `${Math.round(job.progress * 100)}% of the stages done`;
    byId("progress-bar").value = job.progress;
    const list = byId("stage-list");
    list.replaceChildren(
      ...sortedStages(Object.keys(job.stages || {})).map((stage) => {
        const view = job.stages[stage];
        const item = element("li", `stage stage-${view.status}`);
        item.append(element("span", "stage-name", stage), element("span", "stage-status", view.status));
        return item;
      }),
    );
    byId("progress-panel").hidden = false;
  }

  function jobEndedText(job) {
    if (!job.error) return `The job was ${job.status}.`;
    const where = job.error.stage ? ` in ${job.error.stage}` : "";
    return `The job ${job.status}${where}: ${job.error.message} (${job.error.reason}).`;
  }

  // ---- a completed job ----------------------------------------------------------------

  async function showResults(key, mine) {
    const [insights, costs] = await Promise.all([
      api(`${jobPath}/insights`, key),
      api(`${jobPath}/costs`, key),
    ]);
    if (mine !== generation) return;
    showMessage("", null);
    byId("progress-panel").hidden = true;
    const duration = videoDuration(insights);
    showFacts(insights, costs, duration);
    showChapters(insights.chapters || [], duration);
    showTranscript(insights.transcript?.segments || [], insights.chapters || []);
    showSummary(insights);
    showActionItems(insights.action_items || []);
    showCosts(costs);
    byId("results").hidden = false; // visible before the timeline is measured
    laidOut = { scenes: insights.scenes || [], duration };
    relayoutTimeline();
    loadKeyframes(laidOut.scenes, key, mine);
  }

  function videoDuration(insights) {
    const ends = [
      insights.duration_seconds || 0,
      ...(insights.chapters || []).map((c) => c.end_seconds || 0),
      ...(insights.scenes || []).map((s) => s.end || 0),
      ...(insights.transcript?.segments || []).map((s) => s.end || 0),
    ];
    return Math.max(1, ...ends);
  }

  function showFacts(insights, costs, duration) {
    byId("fact-duration").textContent = clock(duration);
    byId("fact-language").textContent = insights.language || "unknown";
    const sentiment = insights.sentiment;
    byId("fact-sentiment").textContent =
      sentiment && sentiment.label ? `${sentiment.label} (${Number(sentiment.score).toFixed(2)})` : "n/a";
    byId("fact-cost").textContent = dollars(costs.total_usd);
  }

  function showChapters(chapters, duration) {
    const bands = byId("chapter-bands");
    const list = byId("chapter-list");
    chapters.forEach((chapter, index) => {
      const colour = CHAPTER_COLOURS[index % CHAPTER_COLOURS.length];
      const start = chapter.start_seconds || 0;
      const end = chapter.end_seconds ?? duration;
      const band = element("div", "chapter-band", chapter.title || `Chapter ${index + 1}`);
      band.style.left = `${(100 * start) / duration}%`;
      band.style.width = `${(100 * Math.max(0, end - start)) / duration}%`;
      band.style.backgroundColor = colour;
      band.title = `${chapter.title} · ${clock(start)}–${clock(end)}`;
      bands.append(band);

      const item = element("li", "chapter");
      const swatch = element("span", "swatch");
      swatch.style.backgroundColor = colour;
      const heading = element("div", "chapter-heading");
      heading.append(swatch, element("span", "chapter-title", chapter.title || `Chapter ${index + 1}`),
        element("span", "chapter-time", `${clock(start)}–${clock(end)}`));
      item.append(heading);
      if (chapter.summary) item.append(element("p", "chapter-summary", chapter.summary));
      list.append(item);
    });
    showAxis(duration);
  }

  function showAxis(duration) {
    const steps = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200];
    const step = steps.find((s) => duration / s <= 8) || 7200;
    const axis = byId("time-axis");
    for (let t = 0; t <= duration + 1e-6; t += step) {
      const tick = element("span", "tick", clock(t));
      tick.style.left = `${(100 * t) / duration}%`;
      axis.append(tick);
    }
  }

  // Keyframes sit above the chapter bands at their scene's start; thumbnails that would
  // overlap go to the next lane down, so every one stays visible on a long video.
  function relayoutTimeline() {
    if (!laidOut) return;
    const lane = byId("keyframe-lane");
    const width = lane.clientWidth;
    const lanesRight = [];
    for (const scene of laidOut.scenes) {
      const figure = keyframeFigure(scene);
      const x = (width * scene.start) / laidOut.duration;
      const left = Math.max(0, Math.min(x, width - THUMB_WIDTH_PX));
      let row = lanesRight.findIndex((right) => right + THUMB_GAP_PX <= left);
      if (row < 0) row = lanesRight.push(0) - 1;
      lanesRight[row] = left + THUMB_WIDTH_PX;
      figure.style.left = `${left}px`;
      figure.style.top = `${row * (THUMB_HEIGHT_PX + 24 + THUMB_GAP_PX)}px`;
      marker(scene, (100 * scene.start) / laidOut.duration);
    }
    lane.style.height = `${Math.max(1, lanesRight.length) * (THUMB_HEIGHT_PX + 24 + THUMB_GAP_PX)}px`;
  }

  function keyframeFigure(scene) {
    const id = `keyframe-${scene.index}`;
    let figure = byId(id);
    if (figure) return figure;
    figure = element("figure", "keyframe");
    figure.id = id;
    figure.dataset.start = String(scene.start);
    const img = element("img", scene.keyframe_url ? "thumb loading" : "thumb missing");
    img.alt = `Keyframe of scene ${scene.index + 1} at ${clock(scene.start)}`;
    img.width = THUMB_WIDTH_PX;
    img.height = THUMB_HEIGHT_PX;
    figure.append(img, element("figcaption", null, `Scene ${scene.index + 1} · ${clock(scene.start)}`));
    byId("keyframe-lane").append(figure);
    return figure;
  }

  function marker(scene, percent) {
    const id = `marker-${scene.index}`;
    if (byId(id)) return;
    const tick = element("span", "scene-marker");
    tick.id = id;
    tick.style.left = `${percent}%`;
    byId("chapter-bands").append(tick);
  }

  // Images need the bearer header, so each is fetched and shown through an object URL.
  async function loadKeyframes(scenes, key, mine) {
    await Promise.all(
      scenes.filter((scene) => scene.keyframe_url).map(async (scene) => {
        const img = byId(`keyframe-${scene.index}`)?.querySelector("img");
        try {
          const blob = await api(scene.keyframe_url, key, "blob");
          if (mine !== generation || !img) return;
          const url = URL.createObjectURL(blob);
          objectUrls.push(url);
          img.src = url;
          img.classList.remove("loading");
        } catch (error) {
          if (img) img.className = "thumb missing";
        }
      }),
    );
  }

  function showTranscript(segments, chapters) {
    const list = byId("transcript");
    for (const segment of segments) {
      const item = element("li", "line");
      const chapterIndex = chapters.findIndex(
        (c) => segment.start >= (c.start_seconds || 0) && segment.start < (c.end_seconds ?? Infinity),
      );
      if (chapterIndex >= 0) item.style.borderLeftColor = CHAPTER_COLOURS[chapterIndex % CHAPTER_COLOURS.length];
      const time = element("time", "stamp", clock(segment.start));
      time.dateTime = `PT${Number(segment.start).toFixed(1)}S`;
      item.append(time, element("span", "text", segment.text));
      list.append(item);
    }
    if (!segments.length) list.append(element("li", "empty", "No speech was transcribed."));
  }

  function showSummary(insights) {
    byId("summary").textContent = insights.summary || "No summary.";
    byId("keywords").replaceChildren(...(insights.keywords || []).map((k) => element("li", "keyword", k)));
  }

  function showActionItems(items) {
    const list = byId("action-items");
    for (const action of items) {
      const item = element("li", "action");
      if (typeof action === "string") {
        item.append(element("span", "task", action));
      } else {
        item.append(element("strong", "owner", action.owner || "Someone"), document.createTextNode(": "),
          element("span", "task", action.task || ""));
        const when = [action.due, action.at_seconds != null ? `said at ${clock(action.at_seconds)}` : null]
          .filter(Boolean).join(" · ");
        if (when) item.append(element("span", "when", when));
      }
      list.append(item);
    }
    if (!items.length) list.append(element("li", "empty", "No action items."));
  }

  // A horizontal bar per stage, drawn as SVG, longest bar = most expensive stage.
  function showCosts(costs) {
    const chart = byId("cost-chart");
    const stages = sortedStages(Object.keys(costs.by_stage || {}));
    if (!stages.length) {
      chart.append(element("p", "empty", "No costs recorded yet."));
      return;
    }
    const labelWidth = 96;
    const valueWidth = 84;
    const barArea = 200;
    const rowHeight = 30;
    const width = labelWidth + barArea + valueWidth;
    const height = stages.length * rowHeight + 6;
    const most = Math.max(...stages.map((s) => costs.by_stage[s]), 0);
    const svg = svgElement("svg", {
      viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img",
      "aria-label": `Cost by stage, total ${dollars(costs.total_usd)}`,
    });
    stages.forEach((stage, row) => {
      const amount = costs.by_stage[stage];
      const y = row * rowHeight + 4;
      const length = most > 0 ? Math.max(2, (barArea * amount) / most) : 2;
      const group = svgElement("g", { class: "cost-bar", "data-stage": stage });
      const label = svgElement("text", { class: "cost-label", x: labelWidth - 8, y: y + 15, "text-anchor": "end" });
      label.textContent = stage;
      const bar = svgElement("rect", {
        x: labelWidth, y, width: length, height: rowHeight - 10, rx: 3,
        fill: CHAPTER_COLOURS[row % CHAPTER_COLOURS.length],
      });
      const tip = svgElement("title", {});
      tip.textContent = `${stage}: ${dollars(amount)}`;
      bar.append(tip);
      const value = svgElement("text", { class: "cost-value", x: labelWidth + length + 6, y: y + 15 });
      value.textContent = dollars(amount);
      group.append(label, bar, value);
      svg.append(group);
    });
    chart.append(svg, element("p", "cost-total", `Total ${dollars(costs.total_usd)}`));
  }

  // ---- small pieces -------------------------------------------------------------------

  function sortedStages(stages) {
    const rank = (s) => (STAGE_ORDER.includes(s) ? STAGE_ORDER.indexOf(s) : STAGE_ORDER.length);
    return [...stages].sort((a, b) => rank(a) - rank(b) || a.localeCompare(b));
  }

  function element(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = String(text);
    return node;
  }

  function svgElement(tag, attributes) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
    return node;
  }

  // mm:ss, or h:mm:ss past the hour.
  function clock(seconds) {
    const total = Math.max(0, Math.floor(Number(seconds) || 0));
    const h = Math.floor(total / 3600);
    const m = Math.floor((total % 3600) / 60);
    const s = String(total % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${String(m).padStart(2, "0")}:${s}`;
  }

  // Costs are often fractions of a cent: keep six decimals, drop trailing zeros past two.
  function dollars(amount) {
    const fixed = Number(amount || 0).toFixed(6).replace(/0{1,4}$/, "");
    return `$${fixed}`;
  }

  document.addEventListener("DOMContentLoaded", start);
})();
