// virtime view: deep-zoom H&E with the virtual mIF channels composited over it, in the browser.
// Written for virtime; no libraries. Tiles come from the local server (relative URLs, so they
// carry the token). Coordinates: level-0 slide pixels; the view is a centre (cx, cy) and a scale
// s (screen pixels per level-0 pixel). Zoom z of the tile pyramid covers 256 * 2^(max_zoom - z)
// level-0 pixels per tile.
//
// Compositing of tile pixel p (uint8) of channel c, colour col_c, opacity o_c, window [lo_c, hi_c]:
//   v = clamp((p - lo) / (hi - lo), 0, 1)
//   over H&E:  out = out * (1 - o v) + o v col      (channels applied in registry order)
//   dark:      out = 255 - (255 - out) * (1 - o v col / 255)   (screen blend, starting from black)
(function () {
  'use strict';

  var TILE = 256;
  var MAX_CACHE = 1500;
  var info = null;
  var view = { cx: 0, cy: 0, s: 1 };
  var chans = [];          // per channel: {index, name, color, rgb, role, on, opacity, lo, hi}
  var settings = { bg: 'he', mask: false };
  var canvas = document.getElementById('view');
  var ctx = canvas.getContext('2d');
  var images = new Map();  // url -> {state: 'loading'|'ok'|'error', img, data, used}
  var composites = new Map();  // 'z/x/y' -> {version, canvas, used}
  var pending = 0;
  var tick = 0;
  var drawQueued = false;
  var t0 = performance.now();
  var status = window.virtimeView = {
    ready: false, firstPaintMs: null, draws: 0, zoom: null, error: null,
    view: view, settings: settings, channels: chans
  };

  function $(id) { return document.getElementById(id); }

  function hexRgb(hex) {
    var v = parseInt(hex.replace('#', ''), 16);
    return [(v >> 16) & 255, (v >> 8) & 255, v & 255];
  }

  function showMessage(text) {
    var m = $('message');
    m.textContent = text;
    m.style.display = text ? 'block' : 'none';
  }

  // ---- state in the URL hash ---------------------------------------------------------------
  function parseHash() {
    var out = {};
    location.hash.replace(/^#/, '').split('&').forEach(function (kv) {
      if (!kv) return;
      var i = kv.indexOf('=');
      var k = i < 0 ? kv : kv.slice(0, i);
      out[decodeURIComponent(k)] = i < 0 ? '' : decodeURIComponent(kv.slice(i + 1));
    });
    return out;
  }

  function perChannel(text, cb) {  // "CD8:0.5,CK:0.3"
    (text || '').split(',').forEach(function (item) {
      var i = item.lastIndexOf(':');
      if (i > 0) cb(item.slice(0, i), parseFloat(item.slice(i + 1)));
    });
  }

  function byName(name) {
    for (var i = 0; i < chans.length; i++) if (chans[i].name === name) return chans[i];
    return null;
  }

  function applyHash() {
    var h = parseHash();
    if (h.x !== undefined && h.y !== undefined) { view.cx = +h.x; view.cy = +h.y; }
    if (h.s !== undefined && +h.s > 0) view.s = +h.s;
    if (h.ch !== undefined) {
      var on = h.ch.split(',');
      chans.forEach(function (c) { c.on = on.indexOf(c.name) >= 0; });
    }
    perChannel(h.op, function (n, v) { var c = byName(n); if (c && v >= 0 && v <= 1) c.opacity = v; });
    perChannel(h.lo, function (n, v) { var c = byName(n); if (c) c.lo = Math.max(0, Math.min(254, v)); });
    perChannel(h.hi, function (n, v) { var c = byName(n); if (c) c.hi = Math.max(1, Math.min(255, v)); });
    if (h.bg === 'dark' || h.bg === 'he') settings.bg = h.bg;
    if (h.mask !== undefined) settings.mask = h.mask === '1';
  }

  var hashTimer = null;
  function writeHash() {
    clearTimeout(hashTimer);
    hashTimer = setTimeout(function () {
      var on = chans.filter(function (c) { return c.on; });
      var parts = ['x=' + view.cx.toFixed(1), 'y=' + view.cy.toFixed(1), 's=' + view.s.toPrecision(5),
        'ch=' + on.map(function (c) { return c.name; }).join(','),
        'op=' + on.map(function (c) { return c.name + ':' + c.opacity; }).join(','),
        'lo=' + on.map(function (c) { return c.name + ':' + c.lo; }).join(','),
        'hi=' + on.map(function (c) { return c.name + ':' + c.hi; }).join(','),
        'bg=' + settings.bg, 'mask=' + (settings.mask ? 1 : 0)];
      history.replaceState(null, '', '#' + parts.join('&'));
    }, 150);
  }

  // ---- geometry ----------------------------------------------------------------------------
  function size() { return { w: canvas.clientWidth, h: canvas.clientHeight }; }

  function zoomLevel() {
    var z = info.max_zoom - Math.floor(Math.log2(1 / view.s) + 1e-9);
    return Math.max(0, Math.min(info.max_zoom, z));
  }

  function fit() {
    var sz = size();
    view.s = Math.min(sz.w / info.width, sz.h / info.height) * 0.95;
    view.cx = info.width / 2;
    view.cy = info.height / 2;
  }

  function clampView() {
    var sz = size();
    var fitS = Math.min(sz.w / info.width, sz.h / info.height);
    view.s = Math.max(fitS / 4, Math.min(16, view.s));
    view.cx = Math.max(0, Math.min(info.width, view.cx));
    view.cy = Math.max(0, Math.min(info.height, view.cy));
  }

  function toLevel0(mx, my) {
    var sz = size();
    return [view.cx + (mx - sz.w / 2) / view.s, view.cy + (my - sz.h / 2) / view.s];
  }

  // ---- loading -----------------------------------------------------------------------------
  function load(url, grey) {
    var e = images.get(url);
    if (e) { e.used = tick; return e; }
    e = { state: 'loading', img: new Image(), data: null, used: tick };
    images.set(url, e);
    pending++;
    e.img.onload = function () {
      if (grey) {
        var c = document.createElement('canvas');
        c.width = e.img.naturalWidth; c.height = e.img.naturalHeight;
        var g = c.getContext('2d');
        g.drawImage(e.img, 0, 0);
        var rgba = g.getImageData(0, 0, c.width, c.height).data;
        var d = new Uint8Array(c.width * c.height);
        for (var i = 0, j = 0; i < d.length; i++, j += 4) d[i] = rgba[j];
        e.data = d;
      }
      e.state = 'ok';
      pending--;
      queueDraw();
    };
    e.img.onerror = function () {
      e.state = 'error';
      pending--;
      status.error = 'tile failed: ' + url;
      queueDraw();
    };
    e.img.src = url;
    return e;
  }

  function evict() {
    if (images.size > MAX_CACHE) {
      var old = Array.from(images.entries()).filter(function (kv) { return kv[1].state !== 'loading'; })
        .sort(function (a, b) { return a[1].used - b[1].used; });
      for (var i = 0; i < old.length && images.size > MAX_CACHE * 0.8; i++) images.delete(old[i][0]);
    }
    if (composites.size > MAX_CACHE / 2) {
      var oc = Array.from(composites.entries()).sort(function (a, b) { return a[1].used - b[1].used; });
      for (var k = 0; k < oc.length && composites.size > MAX_CACHE * 0.4; k++) composites.delete(oc[k][0]);
    }
  }

  // ---- compositing -------------------------------------------------------------------------
  function active() { return chans.filter(function (c) { return c.on; }); }

  function version() {
    return settings.bg + '|' + active().map(function (c) {
      return c.index + ':' + c.opacity + ':' + c.lo + ':' + c.hi;
    }).join(',');
  }

  function tileUrls(z, x, y) {
    var key = z + '/' + x + '_' + y;
    return {
      he: 'he/' + key + '.jpg',
      mask: 'mask/' + key + '.png',
      mif: active().map(function (c) { return 'mif/' + c.index + '/' + key + '.png'; })
    };
  }

  // Returns the composite canvas of tile z/x/y for the current settings, or null if inputs are
  // still loading (requests them).
  function composite(z, x, y, ver) {
    var key = z + '/' + x + '/' + y;
    var done = composites.get(key);
    if (done && done.version === ver) { done.used = tick; return done.canvas; }
    var urls = tileUrls(z, x, y);
    var he = settings.bg === 'he' ? load(urls.he, false) : null;
    var layers = active().map(function (c, i) { return { c: c, e: load(urls.mif[i], true) }; });
    if (he && he.state === 'loading') return null;
    for (var i = 0; i < layers.length; i++) if (layers[i].e.state === 'loading') return null;
    var w = 0, h = 0;
    if (he && he.state === 'ok') { w = he.img.naturalWidth; h = he.img.naturalHeight; }
    layers.forEach(function (l) { if (l.e.state === 'ok') { w = l.e.img.naturalWidth; h = l.e.img.naturalHeight; } });
    if (!w) {  // nothing loaded (errors): a blank tile so the view stops waiting
      var blank = document.createElement('canvas'); blank.width = 1; blank.height = 1;
      composites.set(key, { version: ver, canvas: blank, used: tick });
      return blank;
    }
    var out = (done && done.canvas.width === w && done.canvas.height === h) ? done.canvas : document.createElement('canvas');
    out.width = w; out.height = h;
    var g = out.getContext('2d');
    var px;
    if (he && he.state === 'ok') {
      g.drawImage(he.img, 0, 0);
      px = g.getImageData(0, 0, w, h);
    } else {
      px = g.createImageData(w, h);
      for (var a = 3; a < px.data.length; a += 4) px.data[a] = 255;
    }
    var d = px.data, n = w * h, dark = settings.bg === 'dark';
    layers.forEach(function (l) {
      if (l.e.state !== 'ok' || l.e.data.length !== n) return;
      var p = l.e.data, col = l.c.rgb, o = l.c.opacity, lo = l.c.lo, span = Math.max(1, l.c.hi - l.c.lo);
      var r = col[0], gg = col[1], b = col[2];
      for (var i = 0, j = 0; i < n; i++, j += 4) {
        var v = (p[i] - lo) / span;
        if (v <= 0) continue;
        if (v > 1) v = 1;
        var t = o * v;
        if (dark) {
          d[j] = 255 - (255 - d[j]) * (1 - t * r / 255);
          d[j + 1] = 255 - (255 - d[j + 1]) * (1 - t * gg / 255);
          d[j + 2] = 255 - (255 - d[j + 2]) * (1 - t * b / 255);
        } else {
          d[j] = d[j] * (1 - t) + t * r;
          d[j + 1] = d[j + 1] * (1 - t) + t * gg;
          d[j + 2] = d[j + 2] * (1 - t) + t * b;
        }
      }
    });
    g.putImageData(px, 0, 0);
    composites.set(key, { version: ver, canvas: out, used: tick });
    return out;
  }

  // ---- drawing -----------------------------------------------------------------------------
  function queueDraw() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(draw);
  }

  function draw() {
    drawQueued = false;
    tick++;
    var sz = size();
    var dpr = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(sz.w * dpr) || canvas.height !== Math.round(sz.h * dpr)) {
      canvas.width = Math.round(sz.w * dpr);
      canvas.height = Math.round(sz.h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.fillStyle = settings.bg === 'dark' ? '#000' : '#fff';
    ctx.fillRect(0, 0, sz.w, sz.h);
    ctx.imageSmoothingEnabled = view.s < 1;
    var z = zoomLevel();
    status.zoom = z;
    var d = Math.pow(2, info.max_zoom - z), span = TILE * d;
    var x0 = view.cx - sz.w / 2 / view.s, y0 = view.cy - sz.h / 2 / view.s;
    var x1 = view.cx + sz.w / 2 / view.s, y1 = view.cy + sz.h / 2 / view.s;
    var nx = Math.ceil(info.width / span), ny = Math.ceil(info.height / span);
    var tx0 = Math.max(0, Math.floor(x0 / span)), tx1 = Math.min(nx - 1, Math.floor(x1 / span));
    var ty0 = Math.max(0, Math.floor(y0 / span)), ty1 = Math.min(ny - 1, Math.floor(y1 / span));
    var ver = version();
    var complete = true;
    for (var ty = ty0; ty <= ty1; ty++) {
      for (var tx = tx0; tx <= tx1; tx++) {
        var c = composite(z, tx, ty, ver);
        var sx = (tx * span - x0) * view.s, sy = (ty * span - y0) * view.s;
        if (c) {
          drawTile(c, sx, sy, c.width * d * view.s, c.height * d * view.s);
        } else {
          complete = false;
          drawFallback(z, tx, ty, x0, y0);
        }
        if (settings.mask && info.has_mask) {
          var m = load('mask/' + z + '/' + tx + '_' + ty + '.png', false);
          if (m.state === 'ok') {
            drawTile(m.img, sx, sy, m.img.naturalWidth * d * view.s, m.img.naturalHeight * d * view.s);
          } else if (m.state === 'loading') complete = false;
        }
      }
    }
    status.draws++;
    updateScaleBar();
    evict();
    status.ready = complete && pending === 0;
    if (status.ready && status.firstPaintMs === null) status.firstPaintMs = performance.now() - t0;
    document.body.dataset.ready = status.ready ? '1' : '0';
  }

  function drawTile(img, sx, sy, w, h) {
    // whole screen pixels at scale >= 1 so neighbouring tiles never leave a hairline
    if (view.s >= 1) {
      var ax = Math.round(sx), ay = Math.round(sy);
      ctx.drawImage(img, ax, ay, Math.round(sx + w) - ax, Math.round(sy + h) - ay);
    } else {
      ctx.drawImage(img, sx, sy, w + 0.5, h + 0.5);
    }
  }

  // While a tile loads, show the nearest coarser tile already composited (any settings).
  function drawFallback(z, tx, ty, x0, y0) {
    for (var up = 1; up <= z; up++) {
      var pz = z - up, f = Math.pow(2, up);
      var px = Math.floor(tx / f), py = Math.floor(ty / f);
      var done = composites.get(pz + '/' + px + '/' + py);
      if (!done || done.canvas.width < 2) continue;
      var pd = Math.pow(2, info.max_zoom - pz), pspan = TILE * pd;
      var cd = Math.pow(2, info.max_zoom - z), cspan = TILE * cd;
      var lx = tx * cspan - px * pspan, ly = ty * cspan - py * pspan;  // level-0 offset in parent
      var srcX = lx / pd, srcY = ly / pd, srcW = Math.min(cspan / pd, done.canvas.width - srcX);
      var srcH = Math.min(cspan / pd, done.canvas.height - srcY);
      if (srcW <= 0 || srcH <= 0) return;
      ctx.drawImage(done.canvas, srcX, srcY, srcW, srcH, (tx * cspan - x0) * view.s,
        (ty * cspan - y0) * view.s, srcW * pd * view.s, srcH * pd * view.s);
      return;
    }
  }

  function updateScaleBar() {
    var umPerScreenPx = info.mpp / view.s;
    var target = 120 * umPerScreenPx;
    var p = Math.pow(10, Math.floor(Math.log10(target)));
    var nice = [1, 2, 5, 10].map(function (m) { return m * p; }).filter(function (v) { return v <= target; }).pop() || p;
    $('scalebar-bar').style.width = (nice / umPerScreenPx).toFixed(1) + 'px';
    $('scalebar-label').textContent = nice >= 1000 ? (nice / 1000) + ' mm' : nice + ' µm';
  }

  // ---- panel -------------------------------------------------------------------------------
  function buildPanel() {
    $('meta').textContent = info.width + ' × ' + info.height + ' px at ' + info.mpp.toFixed(4) +
      ' µm/px; virtual mIF at ' + info.canvas.mpp + ' µm/px; ' + info.tiles + ' tiles';
    var box = $('channels');
    box.innerHTML = '';
    chans.forEach(function (c) {
      var row = document.createElement('div');
      row.className = 'ch' + (c.role === 'background' ? ' background' : '');
      row.dataset.channel = c.name;
      row.innerHTML = '<div class="head"><input type="checkbox"><span class="swatch"></span>' +
        '<span class="name"></span></div><div class="controls">' +
        '<span>opacity</span><input type="range" min="0" max="1" step="0.05" data-k="opacity"><span></span>' +
        '<span>min</span><input type="range" min="0" max="254" step="1" data-k="lo"><span></span>' +
        '<span>max</span><input type="range" min="1" max="255" step="1" data-k="hi"><span></span></div>';
      row.querySelector('.swatch').style.background = c.color;
      row.querySelector('.name').textContent = c.name;
      var box1 = row.querySelector('input[type=checkbox]');
      box1.addEventListener('change', function () { c.on = box1.checked; syncPanel(); changed(); });
      row.querySelectorAll('input[type=range]').forEach(function (r) {
        r.addEventListener('input', function () {
          var k = r.dataset.k, v = parseFloat(r.value);
          if (k === 'lo') v = Math.min(v, c.hi - 1);
          if (k === 'hi') v = Math.max(v, c.lo + 1);
          c[k] = v;
          syncPanel();
          changed();
        });
      });
      c.row = row;
      box.appendChild(row);
    });
    $('bg').addEventListener('change', function () { settings.bg = $('bg').value; changed(); });
    $('mask').addEventListener('change', function () { settings.mask = $('mask').checked; changed(); });
    $('defaults').addEventListener('click', function () {
      chans.forEach(function (c) { c.on = info.default_channels.indexOf(c.name) >= 0; });
      syncPanel(); changed();
    });
    $('none').addEventListener('click', function () {
      chans.forEach(function (c) { c.on = false; }); syncPanel(); changed();
    });
    $('fit').addEventListener('click', function () { fit(); changed(); });
    if (!info.has_mask) $('mask').disabled = true;
  }

  function syncPanel() {
    chans.forEach(function (c) {
      c.row.className = 'ch' + (c.role === 'background' ? ' background' : '') + (c.on ? ' on' : '');
      c.row.querySelector('input[type=checkbox]').checked = c.on;
      c.row.querySelectorAll('input[type=range]').forEach(function (r) {
        r.value = c[r.dataset.k];
        r.nextElementSibling.textContent = c[r.dataset.k];
      });
    });
    $('bg').value = settings.bg;
    $('mask').checked = settings.mask;
  }

  function changed() {
    clampView();
    writeHash();
    status.ready = false;
    queueDraw();
  }

  // ---- hover -------------------------------------------------------------------------------
  var hoverTimer = null, hoverSeq = 0;
  function hover(mx, my) {
    var p = toLevel0(mx, my);
    var inside = p[0] >= 0 && p[1] >= 0 && p[0] < info.width && p[1] < info.height;
    $('cursor').textContent = inside ? 'x ' + Math.floor(p[0]) + ', y ' + Math.floor(p[1]) + ' px · ' +
      (p[0] * info.mpp).toFixed(1) + ', ' + (p[1] * info.mpp).toFixed(1) + ' µm' : '';
    clearTimeout(hoverTimer);
    if (!inside) return;
    hoverTimer = setTimeout(function () {
      var seq = ++hoverSeq;
      var c = active().map(function (ch) { return ch.index; }).join(',');
      fetch('at?x=' + p[0].toFixed(1) + '&y=' + p[1].toFixed(1) + '&c=' + c)
        .then(function (r) { return r.json(); })
        .then(function (res) { if (seq === hoverSeq) showHover(res); })
        .catch(function () {});
    }, 80);
  }

  function cell(tr, text) { var td = document.createElement('td'); td.textContent = text; tr.appendChild(td); }

  function showHover(res) {
    var box = $('hover');
    box.innerHTML = '';
    var p = document.createElement('p');
    p.textContent = 'level-0 (' + Math.floor(res.x) + ', ' + Math.floor(res.y) + ')';
    box.appendChild(p);
    var names = Object.keys(res.values);
    if (names.length) {
      var pv = document.createElement('p');
      pv.textContent = 'virtual mIF here: ' + names.map(function (n) {
        return n + ' ' + (res.values[n] / 255).toFixed(2);
      }).join(', ');
      box.appendChild(pv);
    }
    if (!res.tile) { box.appendChild(document.createTextNode('no tile here (not tissue)')); return; }
    var t = res.tile;
    var head = document.createElement('p');
    head.textContent = 'tile ' + t.tile + ' at (' + t.x + ', ' + t.y + ')' +
      (t.tissue_fraction !== undefined ? ', tissue ' + (100 * t.tissue_fraction).toFixed(0) + '%' : '');
    box.appendChild(head);
    var table = document.createElement('table');
    var hr = document.createElement('tr');
    ['channel', 'positive', 'mean p'].forEach(function (h) { cell(hr, h); });
    table.appendChild(hr);
    var on = active().map(function (c) { return c.name; });
    var rows = Object.keys(t.channels).sort(function (a, b) {
      var ia = on.indexOf(a) >= 0 ? 0 : 1, ib = on.indexOf(b) >= 0 ? 0 : 1;
      return ia - ib || t.channels[b][0] - t.channels[a][0];
    }).slice(0, Math.max(8, on.length));
    rows.forEach(function (n) {
      var tr = document.createElement('tr');
      cell(tr, n);
      cell(tr, (100 * t.channels[n][0]).toFixed(1) + '%');
      cell(tr, t.channels[n][1].toFixed(3));
      table.appendChild(tr);
    });
    box.appendChild(table);
  }

  // ---- interaction -------------------------------------------------------------------------
  function zoomAt(mx, my, factor) {
    var p = toLevel0(mx, my);
    view.s *= factor;
    clampView();
    var sz = size();
    view.cx = p[0] - (mx - sz.w / 2) / view.s;
    view.cy = p[1] - (my - sz.h / 2) / view.s;
    changed();
  }

  function bind() {
    var map = $('map'), drag = null;
    map.addEventListener('mousedown', function (e) {
      drag = { x: e.clientX, y: e.clientY, cx: view.cx, cy: view.cy };
      map.classList.add('dragging');
    });
    window.addEventListener('mouseup', function () { drag = null; map.classList.remove('dragging'); });
    map.addEventListener('mousemove', function (e) {
      var r = canvas.getBoundingClientRect();
      if (drag) {
        view.cx = drag.cx - (e.clientX - drag.x) / view.s;
        view.cy = drag.cy - (e.clientY - drag.y) / view.s;
        changed();
      }
      hover(e.clientX - r.left, e.clientY - r.top);
    });
    map.addEventListener('wheel', function (e) {
      e.preventDefault();
      var r = canvas.getBoundingClientRect();
      zoomAt(e.clientX - r.left, e.clientY - r.top, Math.pow(1.2, -e.deltaY / 100));
    }, { passive: false });
    map.addEventListener('dblclick', function (e) {
      var r = canvas.getBoundingClientRect();
      zoomAt(e.clientX - r.left, e.clientY - r.top, e.shiftKey ? 0.5 : 2);
    });
    window.addEventListener('keydown', function (e) {
      if (e.target && e.target.tagName === 'INPUT' && e.target.type === 'range') return;
      var sz = size(), step = 100 / view.s;
      if (e.key === '+' || e.key === '=') zoomAt(sz.w / 2, sz.h / 2, 1.5);
      else if (e.key === '-') zoomAt(sz.w / 2, sz.h / 2, 1 / 1.5);
      else if (e.key === 'ArrowLeft') { view.cx -= step; changed(); }
      else if (e.key === 'ArrowRight') { view.cx += step; changed(); }
      else if (e.key === 'ArrowUp') { view.cy -= step; changed(); }
      else if (e.key === 'ArrowDown') { view.cy += step; changed(); }
    });
    window.addEventListener('resize', queueDraw);
    window.addEventListener('hashchange', function () { applyHash(); syncPanel(); clampView(); queueDraw(); });
  }

  // Programmatic control (tests, notebooks driving the page).
  status.setView = function (cx, cy, s) { view.cx = cx; view.cy = cy; view.s = s; changed(); };
  status.setChannels = function (names) {
    chans.forEach(function (c) { c.on = names.indexOf(c.name) >= 0; }); syncPanel(); changed();
  };

  // ---- start -------------------------------------------------------------------------------
  fetch('info.json').then(function (r) {
    if (!r.ok) throw new Error('info.json: HTTP ' + r.status);
    return r.json();
  }).then(function (data) {
    info = data;
    status.info = info;
    info.channels.forEach(function (c) {
      chans.push({ index: c.index, name: c.name, color: c.color, rgb: hexRgb(c.color), role: c.role,
        on: info.default_channels.indexOf(c.name) >= 0, opacity: 0.8, lo: 0, hi: 255 });
    });
    buildPanel();
    fit();
    applyHash();
    clampView();
    syncPanel();
    bind();
    queueDraw();
  }).catch(function (err) {
    status.error = String(err);
    showMessage('cannot load the slide: ' + err);
  });
})();
