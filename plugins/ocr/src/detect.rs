//! Text detection around PP-OCR's DB detector: the size the detector is given, and
//! its probability map turned into boxes (threshold, dilate, connected regions,
//! minimum-area rectangles, score, unclip), with the settings and the arithmetic of
//! rapidocr-onnxruntime 1.4.4's `DBPostProcess`.

use crate::raster::Point;

pub struct DetectSettings {
    /// A pixel is text when its probability is above this.
    pub threshold: f32,
    /// A region is kept when its mean probability is at least this.
    pub box_threshold: f32,
    /// Regions looked at, at most.
    pub max_candidates: usize,
    /// How far a region's box is grown: area x ratio / perimeter (DB's unclip).
    pub unclip_ratio: f32,
}

/// The detector's input size for an image: the shorter side brought up to `min_side`
/// (never shrunk), then both sides rounded to a multiple of 32 as the network needs.
/// `None` when a side rounds to nothing.
pub fn input_size(width: usize, height: usize, min_side: usize) -> Option<(usize, usize)> {
    let ratio = if height.min(width) < min_side {
        min_side as f64 / height.min(width) as f64
    } else {
        1.0
    };
    let round32 =
        |side: usize| ((side as f64 * ratio).trunc() / 32.0).round_ties_even() as usize * 32;
    let (w, h) = (round32(width), round32(height));
    (w > 0 && h > 0).then_some((w, h))
}

/// Text boxes (top-left, top-right, bottom-right, bottom-left, in whole pixels of an
/// image of `dest_width` x `dest_height`) from the detector's `width` x `height`
/// probability map.
pub fn boxes(
    probability: &[f32],
    width: usize,
    height: usize,
    dest_width: usize,
    dest_height: usize,
    settings: &DetectSettings,
) -> Vec<[Point; 4]> {
    let text = dilated_mask(probability, width, height, settings.threshold);
    let mut found = Vec::new();
    for region in regions(&text, width, height)
        .into_iter()
        .take(settings.max_candidates)
    {
        let Some((corners, short_side)) = min_area_rect(&convex_hull(region)) else {
            continue;
        };
        if short_side < 3.0 {
            continue;
        }
        let corners = order_corners(corners);
        if box_score(probability, width, height, &corners) < settings.box_threshold {
            continue;
        }
        let Some((grown, short_side)) = unclip(&corners, settings.unclip_ratio) else {
            continue;
        };
        if short_side < 5.0 {
            continue;
        }
        let scale = |v: f32, from: usize, to: usize| {
            ((v / from as f32 * to as f32).round_ties_even()).clamp(0.0, to as f32)
        };
        let scaled =
            grown.map(|[x, y]| [scale(x, width, dest_width), scale(y, height, dest_height)]);
        // rapidocr's `filter_tag_det_res`: clockwise, inside the image, wider and
        // taller than 3 pixels.
        let clipped = clockwise(scaled).map(|[x, y]| {
            [
                x.clamp(0.0, dest_width as f32 - 1.0).trunc(),
                y.clamp(0.0, dest_height as f32 - 1.0).trunc(),
            ]
        });
        let w = distance(clipped[0], clipped[1]) as usize;
        let h = distance(clipped[0], clipped[3]) as usize;
        if w > 3 && h > 3 {
            found.push(clipped);
        }
    }
    found
}

/// Pixels above the threshold, dilated by a 2 x 2 kernel (OpenCV's anchor: a pixel is
/// set when it or its neighbours above and to the left are).
fn dilated_mask(probability: &[f32], width: usize, height: usize, threshold: f32) -> Vec<bool> {
    let above: Vec<bool> = probability.iter().map(|&p| p > threshold).collect();
    let mut mask = vec![false; width * height];
    for y in 0..height {
        for x in 0..width {
            let at = |dx: usize, dy: usize| x >= dx && y >= dy && above[(y - dy) * width + x - dx];
            mask[y * width + x] = at(0, 0) || at(1, 0) || at(0, 1) || at(1, 1);
        }
    }
    mask
}

/// The 8-connected regions of the mask, in raster order of their first pixel; each
/// region as the leftmost and rightmost pixel of each of its rows (all its convex
/// hull needs).
fn regions(mask: &[bool], width: usize, height: usize) -> Vec<Vec<[i64; 2]>> {
    let mut seen = vec![false; mask.len()];
    let mut regions = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || seen[start] {
            continue;
        }
        seen[start] = true;
        stack.push(start);
        // Per row: (row, leftmost, rightmost).
        let mut rows: Vec<(usize, usize, usize)> = Vec::new();
        let mut extent = std::collections::HashMap::new();
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            let slot = *extent.entry(y).or_insert_with(|| {
                rows.push((y, x, x));
                rows.len() - 1
            });
            let row = &mut rows[slot];
            row.1 = row.1.min(x);
            row.2 = row.2.max(x);
            for dy in -1i64..=1 {
                for dx in -1i64..=1 {
                    let (nx, ny) = (x as i64 + dx, y as i64 + dy);
                    if nx < 0 || ny < 0 || nx >= width as i64 || ny >= height as i64 {
                        continue;
                    }
                    let n = ny as usize * width + nx as usize;
                    if mask[n] && !seen[n] {
                        seen[n] = true;
                        stack.push(n);
                    }
                }
            }
        }
        let mut points = Vec::with_capacity(rows.len() * 2);
        for (y, left, right) in rows {
            points.push([left as i64, y as i64]);
            if right != left {
                points.push([right as i64, y as i64]);
            }
        }
        regions.push(points);
    }
    regions
}

/// Andrew's monotone chain: the hull's corners counter-clockwise, no collinear points.
fn convex_hull(mut points: Vec<[i64; 2]>) -> Vec<[i64; 2]> {
    points.sort_unstable();
    points.dedup();
    if points.len() < 3 {
        return points;
    }
    let cross = |o: [i64; 2], a: [i64; 2], b: [i64; 2]| {
        (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])
    };
    let mut hull: Vec<[i64; 2]> = Vec::with_capacity(points.len() * 2);
    for pass in 0..2 {
        let start = hull.len();
        let ordered: Box<dyn Iterator<Item = &[i64; 2]>> = if pass == 0 {
            Box::new(points.iter())
        } else {
            Box::new(points.iter().rev())
        };
        for &p in ordered {
            while hull.len() >= start + 2
                && cross(hull[hull.len() - 2], hull[hull.len() - 1], p) <= 0
            {
                hull.pop();
            }
            hull.push(p);
        }
        hull.pop();
    }
    hull
}

/// The smallest rectangle around a convex polygon (rotating calipers: one of its sides
/// lies on a side of the hull), as its four corners and its shorter side; `None` for
/// a single point.
fn min_area_rect(hull: &[[i64; 2]]) -> Option<([Point; 4], f32)> {
    if hull.len() < 2 {
        return None;
    }
    let pts: Vec<[f64; 2]> = hull.iter().map(|p| [p[0] as f64, p[1] as f64]).collect();
    let mut best: Option<(f64, [Point; 4], f64)> = None;
    for i in 0..pts.len() {
        let (a, b) = (pts[i], pts[(i + 1) % pts.len()]);
        let len = ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt();
        if len == 0.0 {
            continue;
        }
        let u = [(b[0] - a[0]) / len, (b[1] - a[1]) / len];
        let n = [-u[1], u[0]];
        let (mut lo_u, mut hi_u, mut lo_n, mut hi_n) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for p in &pts {
            let pu = p[0] * u[0] + p[1] * u[1];
            let pn = p[0] * n[0] + p[1] * n[1];
            lo_u = lo_u.min(pu);
            hi_u = hi_u.max(pu);
            lo_n = lo_n.min(pn);
            hi_n = hi_n.max(pn);
        }
        let area = (hi_u - lo_u) * (hi_n - lo_n);
        if best
            .as_ref()
            .is_none_or(|(best_area, _, _)| area < *best_area - 1e-9)
        {
            let corner = |su: f64, sn: f64| {
                [
                    (su * u[0] + sn * n[0]) as f32,
                    (su * u[1] + sn * n[1]) as f32,
                ]
            };
            let corners = [
                corner(lo_u, lo_n),
                corner(hi_u, lo_n),
                corner(hi_u, hi_n),
                corner(lo_u, hi_n),
            ];
            best = Some((area, corners, (hi_u - lo_u).min(hi_n - lo_n)));
        }
    }
    best.map(|(_, corners, short)| (corners, short as f32))
}

/// rapidocr's `get_mini_boxes` order: of the two leftmost corners the upper is first
/// and the lower last; of the two rightmost the upper second, the lower third.
fn order_corners(mut corners: [Point; 4]) -> [Point; 4] {
    corners.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let (tl, bl) = if corners[1][1] > corners[0][1] {
        (corners[0], corners[1])
    } else {
        (corners[1], corners[0])
    };
    let (tr, br) = if corners[3][1] > corners[2][1] {
        (corners[2], corners[3])
    } else {
        (corners[3], corners[2])
    };
    [tl, tr, br, bl]
}

/// rapidocr's `order_points_clockwise`: by x, then each pair by y.
fn clockwise(mut corners: [Point; 4]) -> [Point; 4] {
    corners.sort_by(|a, b| a[0].total_cmp(&b[0]));
    let by_y = |a: Point, b: Point| if b[1] < a[1] { (b, a) } else { (a, b) };
    let (tl, bl) = by_y(corners[0], corners[1]);
    let (tr, br) = by_y(corners[2], corners[3]);
    [tl, tr, br, bl]
}

fn distance(a: Point, b: Point) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// The mean probability inside the box (DB's "fast" score: the box's pixels, corners
/// truncated to whole pixels, within its bounding rectangle).
fn box_score(probability: &[f32], width: usize, height: usize, corners: &[Point; 4]) -> f32 {
    let clamp = |v: f32, n: usize| (v as i64).clamp(0, n as i64 - 1);
    let xs = corners.map(|p| p[0]);
    let ys = corners.map(|p| p[1]);
    let min = |v: [f32; 4]| v.into_iter().fold(f32::MAX, f32::min);
    let max = |v: [f32; 4]| v.into_iter().fold(f32::MIN, f32::max);
    let (x0, x1) = (clamp(min(xs).floor(), width), clamp(max(xs).ceil(), width));
    let (y0, y1) = (
        clamp(min(ys).floor(), height),
        clamp(max(ys).ceil(), height),
    );
    let quad = corners.map(|[x, y]| {
        [
            (x - x0 as f32).trunc() as i64,
            (y - y0 as f32).trunc() as i64,
        ]
    });
    let (mut sum, mut count) = (0f64, 0u64);
    for y in y0..=y1 {
        for x in x0..=x1 {
            if inside(&quad, [x - x0, y - y0]) {
                sum += f64::from(probability[y as usize * width + x as usize]);
                count += 1;
            }
        }
    }
    if count == 0 {
        0.0
    } else {
        (sum / count as f64) as f32
    }
}

/// Whether `p` is inside or on the edge of the convex quadrilateral.
fn inside(quad: &[[i64; 2]; 4], p: [i64; 2]) -> bool {
    let (mut positive, mut negative) = (false, false);
    for i in 0..4 {
        let (a, b) = (quad[i], quad[(i + 1) % 4]);
        let cross = (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0]);
        positive |= cross > 0;
        negative |= cross < 0;
    }
    !(positive && negative)
}

/// DB's unclip as rapidocr runs it: the box offset outward by area x ratio / perimeter
/// with round joins by pyclipper (which takes the corners as whole pixels, truncated,
/// and gives whole-pixel vertices), then the minimum-area rectangle around that.
/// Returns the rectangle and its shorter side; `None` for a box with no area.
fn unclip(corners: &[Point; 4], ratio: f32) -> Option<([Point; 4], f32)> {
    let float = corners.map(|[x, y]| [f64::from(x), f64::from(y)]);
    let area = (0..4)
        .map(|i| {
            let (a, b) = (float[i], float[(i + 1) % 4]);
            a[0] * b[1] - b[0] * a[1]
        })
        .sum::<f64>()
        .abs()
        / 2.0;
    let length: f64 = (0..4)
        .map(|i| {
            let (a, b) = (float[i], float[(i + 1) % 4]);
            ((b[0] - a[0]).powi(2) + (b[1] - a[1]).powi(2)).sqrt()
        })
        .sum();
    if area == 0.0 || length == 0.0 {
        return None;
    }
    let delta = area * f64::from(ratio) / length;
    let quad = float.map(|[x, y]| [x.trunc(), y.trunc()]);
    let grown = round_offset(&quad, delta);
    let (rect, short_side) = min_area_rect(&convex_hull(grown))?;
    Some((order_corners(rect), short_side))
}

/// The vertices of Clipper's round-joined outward offset of a convex quadrilateral by
/// `delta`: at each corner, an arc from the previous edge's normal to the next one's
/// in Clipper's angular steps (arc tolerance 0.25), each vertex rounded to a whole
/// pixel as Clipper does.
fn round_offset(quad: &[[f64; 2]; 4], delta: f64) -> Vec<[i64; 2]> {
    let centre = [
        quad.iter().map(|p| p[0]).sum::<f64>() / 4.0,
        quad.iter().map(|p| p[1]).sum::<f64>() / 4.0,
    ];
    // The outward unit normal of each edge i -> i + 1 (none for an edge of no length).
    let normals: Vec<Option<[f64; 2]>> = (0..4)
        .map(|i| {
            let (a, b) = (quad[i], quad[(i + 1) % 4]);
            let (dx, dy) = (b[0] - a[0], b[1] - a[1]);
            let len = (dx * dx + dy * dy).sqrt();
            if len == 0.0 {
                return None;
            }
            let n = [dy / len, -dx / len];
            let mid = [
                (a[0] + b[0]) / 2.0 - centre[0],
                (a[1] + b[1]) / 2.0 - centre[1],
            ];
            Some(if n[0] * mid[0] + n[1] * mid[1] < 0.0 {
                [-n[0], -n[1]]
            } else {
                n
            })
        })
        .collect();
    let tolerance = 0.25f64.min(delta * 0.25);
    let mut steps_per_turn = std::f64::consts::PI / (1.0 - tolerance / delta).acos();
    steps_per_turn = steps_per_turn.min(delta * std::f64::consts::PI);
    let step = std::f64::consts::TAU / steps_per_turn;
    let round = |p: [f64; 2]| [p[0].round() as i64, p[1].round() as i64];
    let mut out = Vec::new();
    for j in 0..4 {
        let (Some(before), Some(after)) = (normals[(j + 3) % 4], normals[j]) else {
            continue;
        };
        let p = quad[j];
        let sin = before[0] * after[1] - before[1] * after[0];
        let cos = before[0] * after[0] + before[1] * after[1];
        let turn = sin.atan2(cos);
        let count = ((turn.abs() * steps_per_turn / std::f64::consts::TAU).round() as usize).max(1);
        let (s, c) = (step.copysign(turn).sin(), step.cos());
        let mut n = before;
        for _ in 0..count {
            out.push(round([p[0] + n[0] * delta, p[1] + n[1] * delta]));
            n = [n[0] * c - n[1] * s, n[0] * s + n[1] * c];
        }
        out.push(round([p[0] + after[0] * delta, p[1] + after[1] * delta]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: DetectSettings = DetectSettings {
        threshold: 0.3,
        box_threshold: 0.5,
        max_candidates: 1000,
        unclip_ratio: 1.6,
    };

    #[test]
    fn the_detector_input_keeps_the_shorter_side_at_736_in_multiples_of_32() {
        // A 600 x 150 line: 736 / 150 = 4.907 -> 2944 x 736.
        assert_eq!(input_size(600, 150, 736), Some((2944, 736)));
        // Already large enough: only rounded to 32 (python's round: halves to even).
        assert_eq!(input_size(1000, 800, 736), Some((992, 800)));
        assert_eq!(input_size(1040, 800, 736), Some((1024, 800)));
    }

    #[test]
    fn a_tilted_rectangle_of_text_becomes_one_box_around_it() {
        // A 40 x 10 block of probability 0.9 in a 100 x 60 map.
        let (w, h) = (100, 60);
        let mut map = vec![0.0f32; w * h];
        for y in 20..30 {
            for x in 30..70 {
                map[y * w + x] = 0.9;
            }
        }
        let found = boxes(&map, w, h, w * 2, h * 2, &SETTINGS);
        assert_eq!(found.len(), 1, "{found:?}");
        let [tl, tr, br, bl] = found[0];
        // Grown by 40 * 10 * 1.6 / 100 = 6.4 px (the mask is dilated by one pixel up
        // and left first), then doubled.
        assert!(
            tl[0] < 60.0 && tl[1] < 40.0 && br[0] > 140.0 && br[1] > 60.0,
            "{found:?}"
        );
        assert_eq!(tl[1], tr[1]);
        assert_eq!(bl[1], br[1]);
    }

    #[test]
    fn faint_or_tiny_regions_are_not_text() {
        let (w, h) = (50, 50);
        let mut map = vec![0.0f32; w * h];
        // A 2-pixel speck, and a wide region of probability 0.4 (above the pixel
        // threshold, under the box threshold).
        map[5 * w + 5] = 0.9;
        map[5 * w + 6] = 0.9;
        for y in 20..30 {
            for x in 10..40 {
                map[y * w + x] = 0.4;
            }
        }
        assert!(boxes(&map, w, h, w, h, &SETTINGS).is_empty());
    }

    #[test]
    fn the_minimum_area_rectangle_of_a_rotated_square_is_the_square() {
        let hull = convex_hull(vec![[0, 5], [5, 0], [10, 5], [5, 10], [5, 5]]);
        assert_eq!(hull.len(), 4);
        let (_, short) = min_area_rect(&hull).unwrap();
        assert!((short - 50f32.sqrt()).abs() < 1e-4, "{short}");
    }
}
