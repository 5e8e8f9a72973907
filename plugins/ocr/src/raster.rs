//! The image work of the pipeline, in the guest: decoding, resizing, padding, turning
//! and cutting out a text line. Pixels are 8-bit BGR, the order PP-OCR's models were
//! trained on (rapidocr feeds them OpenCV's order), and the resampling follows
//! OpenCV's, so that the models see what they see under rapidocr.

use image::{ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// An 8-bit BGR image, rows top to bottom.
#[derive(Clone)]
pub struct Bgr {
    pub width: usize,
    pub height: usize,
    pub pixels: Vec<u8>,
}

/// A point in pixel coordinates.
pub type Point = [f32; 2];

impl Bgr {
    pub fn new(width: usize, height: usize) -> Self {
        Self {
            width,
            height,
            pixels: vec![0; width * height * 3],
        }
    }

    /// Decodes PNG or JPEG bytes. `max_side` bounds each side and `max_bytes` what the
    /// decoder may allocate, both checked from the header before any pixel is
    /// decoded: the bytes come from a client.
    pub fn decode(bytes: &[u8], max_side: u32, max_bytes: u64) -> Result<Self, String> {
        let mut reader = ImageReader::new(Cursor::new(bytes))
            .with_guessed_format()
            .map_err(|e| format!("cannot read the image: {e}"))?;
        match reader.format() {
            None => return Err("not a PNG or JPEG image".into()),
            // The JPEG decoder fills in what is missing from a cut-off file; refuse it
            // instead, as Pillow does, rather than read half a page.
            Some(ImageFormat::Jpeg) if !ends_with_end_of_image(bytes) => {
                return Err("the JPEG image is truncated (no end-of-image marker)".into());
            }
            Some(_) => {}
        }
        let mut limits = Limits::default();
        limits.max_image_width = Some(max_side);
        limits.max_image_height = Some(max_side);
        limits.max_alloc = Some(max_bytes);
        reader.limits(limits);
        let decoded = reader.decode().map_err(|e| match e {
            image::ImageError::Limits(_) => format!(
                "the image is too large (at most {max_side} pixels a side and {} MiB decoded)",
                max_bytes >> 20
            ),
            e => format!("cannot decode the image: {e}"),
        })?;
        // Transparent pixels over white: the page behind a scanned or drawn text.
        let rgba = decoded.into_rgba8();
        let (width, height) = (rgba.width() as usize, rgba.height() as usize);
        if width == 0 || height == 0 {
            return Err("the image is empty".into());
        }
        let mut pixels = Vec::with_capacity(width * height * 3);
        for p in rgba.pixels() {
            let [r, g, b, a] = p.0;
            let over_white = |c: u8| {
                ((u32::from(c) * u32::from(a) + 255 * (255 - u32::from(a)) + 127) / 255) as u8
            };
            pixels.extend_from_slice(&[over_white(b), over_white(g), over_white(r)]);
        }
        Ok(Self {
            width,
            height,
            pixels,
        })
    }

    fn at(&self, x: usize, y: usize) -> &[u8] {
        let i = (y * self.width + x) * 3;
        &self.pixels[i..i + 3]
    }

    /// Resized as OpenCV's `INTER_LINEAR` does for 8-bit images, to the bit: pixel
    /// centres aligned, no smoothing when shrinking, 11-bit fixed-point weights and
    /// its vector code's rounding. The models were trained and are run by rapidocr on
    /// OpenCV's pixels; a level of difference here flips a space now and then.
    pub fn resize(&self, width: usize, height: usize) -> Bgr {
        let xs = linear_taps(self.width, width, true);
        let ys = linear_taps(self.height, height, false);
        let row = |y: usize| -> Vec<i32> {
            let mut out = Vec::with_capacity(width * 3);
            for &(x0, x1, a0, a1) in &xs {
                let (p, q) = (self.at(x0, y), self.at(x1, y));
                for ch in 0..3 {
                    out.push(i32::from(p[ch]) * a0 + i32::from(q[ch]) * a1);
                }
            }
            out
        };
        let mut out = Bgr::new(width, height);
        let mut cached: Vec<(usize, Vec<i32>)> = Vec::new();
        for (y, &(y0, y1, b0, b1)) in ys.iter().enumerate() {
            for wanted in [y0, y1] {
                if !cached.iter().any(|(r, _)| *r == wanted) {
                    if cached.len() == 2 {
                        cached.remove(0);
                    }
                    cached.push((wanted, row(wanted)));
                }
            }
            let top = &cached.iter().find(|(r, _)| *r == y0).expect("cached").1;
            let bottom = &cached.iter().find(|(r, _)| *r == y1).expect("cached").1;
            let o = y * width * 3;
            for (i, (t, b)) in top.iter().zip(bottom).enumerate() {
                let v = (((t >> 4) * b0) >> 16) + (((b >> 4) * b1) >> 16);
                out.pixels[o + i] = ((v + 2) >> 2).clamp(0, 255) as u8;
            }
        }
        out
    }

    /// Black rows added above and below (rapidocr's letterbox for thin lines).
    pub fn pad_vertical(&self, rows: usize) -> Bgr {
        let mut out = Bgr::new(self.width, self.height + 2 * rows);
        let start = rows * self.width * 3;
        out.pixels[start..start + self.pixels.len()].copy_from_slice(&self.pixels);
        out
    }

    /// Turned by 180°.
    pub fn rotate_180(&self) -> Bgr {
        let mut out = self.clone();
        for (o, i) in out
            .pixels
            .chunks_exact_mut(3)
            .zip(self.pixels.chunks_exact(3).rev())
        {
            o.copy_from_slice(i);
        }
        out
    }

    /// Turned by 90° counter-clockwise (numpy's `rot90`).
    pub fn rotate_90_ccw(&self) -> Bgr {
        let mut out = Bgr::new(self.height, self.width);
        for y in 0..out.height {
            for x in 0..out.width {
                let src = self.at(self.width - 1 - y, x);
                let o = (y * out.width + x) * 3;
                out.pixels[o..o + 3].copy_from_slice(src);
            }
        }
        out
    }

    /// The quadrilateral `corners` (top-left, top-right, bottom-right, bottom-left)
    /// straightened into a `width` x `height` image: a perspective warp with bicubic
    /// sampling and the edge pixels repeated outside the image, as rapidocr's
    /// `warpPerspective` call does.
    pub fn warp_quad(&self, corners: &[Point; 4], width: usize, height: usize) -> Bgr {
        let target = [
            [0.0, 0.0],
            [width as f32, 0.0],
            [width as f32, height as f32],
            [0.0, height as f32],
        ];
        let mut out = Bgr::new(width, height);
        let Some(h) = homography(&target, corners) else {
            return out;
        };
        let table = CubicTable::get();
        for y in 0..height {
            for x in 0..width {
                let (u, v) = (x as f64, y as f64);
                let w = h[6] * u + h[7] * v + 1.0;
                let sx = (h[0] * u + h[1] * v + h[2]) / w;
                let sy = (h[3] * u + h[4] * v + h[5]) / w;
                let o = (y * width + x) * 3;
                self.sample_cubic(sx, sy, table, &mut out.pixels[o..o + 3]);
            }
        }
        out
    }

    /// OpenCV's bicubic remap for 8-bit images: the position in 1/32 pixel, 15-bit
    /// weights from its table, edge pixels repeated.
    fn sample_cubic(&self, x: f64, y: f64, table: &CubicTable, out: &mut [u8]) {
        let fx = (x * 32.0).round_ties_even() as i64;
        let fy = (y * 32.0).round_ties_even() as i64;
        let weights = &table.0[((fy & 31) * 32 + (fx & 31)) as usize];
        let (ix, iy) = ((fx >> 5) - 1, (fy >> 5) - 1);
        let clamp = |v: i64, n: usize| v.clamp(0, n as i64 - 1) as usize;
        let mut acc = [0i32; 3];
        for j in 0..4 {
            let sy = clamp(iy + j as i64, self.height);
            for i in 0..4 {
                let p = self.at(clamp(ix + i as i64, self.width), sy);
                let w = weights[j * 4 + i];
                for ch in 0..3 {
                    acc[ch] += i32::from(p[ch]) * w;
                }
            }
        }
        for ch in 0..3 {
            out[ch] = ((acc[ch] + (1 << 14)) >> 15).clamp(0, 255) as u8;
        }
    }

    /// Writes the image into a `[3, rows, row_width]` slot of a model input, scaled to
    /// [-1, 1]; columns past the image stay 0 (PP-OCR's padding).
    pub fn write_normalized(&self, slot: &mut [f32], row_width: usize) {
        let plane = self.height * row_width;
        for y in 0..self.height {
            for x in 0..self.width {
                let p = self.at(x, y);
                for ch in 0..3 {
                    slot[ch * plane + y * row_width + x] = f32::from(p[ch]) / 127.5 - 1.0;
                }
            }
        }
    }
}

/// Whether JPEG data ends with its end-of-image marker (some writers pad after it
/// with zeros).
fn ends_with_end_of_image(bytes: &[u8]) -> bool {
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    bytes[..end].ends_with(&[0xFF, 0xD9])
}

/// For each output position: the two source positions and their weights in 11-bit
/// fixed point, as OpenCV computes them (a single-precision fraction; along a row a
/// position past the edge takes the edge pixel whole, along a column the rows are
/// clamped but keep their weights).
fn linear_taps(from: usize, to: usize, clamp_weights: bool) -> Vec<(usize, usize, i32, i32)> {
    let scale = 1.0 / (to as f64 / from as f64);
    let last = from as i64 - 1;
    (0..to)
        .map(|d| {
            let f = ((d as f64 + 0.5) * scale - 0.5) as f32;
            let mut s = f.floor() as i64;
            let mut frac = f - f.floor();
            if clamp_weights && s < 0 {
                (s, frac) = (0, 0.0);
            }
            if clamp_weights && s >= last {
                (s, frac) = (last, 0.0);
            }
            let weight = |w: f32| (w * 2048.0).round_ties_even() as i32;
            (
                s.clamp(0, last) as usize,
                (s + 1).clamp(0, last) as usize,
                weight(1.0 - frac),
                weight(frac),
            )
        })
        .collect()
}

/// Keys' bicubic kernel with a = -0.75 (OpenCV's), in single precision as OpenCV
/// computes its table.
fn cubic_weights(t: f32) -> [f32; 4] {
    const A: f32 = -0.75;
    let w0 = ((A * (t + 1.0) - 5.0 * A) * (t + 1.0) + 8.0 * A) * (t + 1.0) - 4.0 * A;
    let w1 = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    let w2 = ((A + 2.0) * (1.0 - t) - (A + 3.0)) * (1.0 - t) * (1.0 - t) + 1.0;
    [w0, w1, w2, 1.0 - w0 - w1 - w2]
}

/// OpenCV's 4 x 4 bicubic weights for each 1/32-pixel position, in 15-bit fixed point,
/// each set corrected to sum to exactly 1 the way OpenCV corrects it.
struct CubicTable(Vec<[i32; 16]>);

impl CubicTable {
    /// The table, built on first use (every crop samples the same one).
    fn get() -> &'static CubicTable {
        static TABLE: std::sync::OnceLock<CubicTable> = std::sync::OnceLock::new();
        TABLE.get_or_init(CubicTable::new)
    }

    fn new() -> Self {
        let mut table = Vec::with_capacity(32 * 32);
        for fy in 0..32 {
            let wy = cubic_weights(fy as f32 / 32.0);
            for fx in 0..32 {
                let wx = cubic_weights(fx as f32 / 32.0);
                let mut w = [0i32; 16];
                let mut sum = 0;
                for j in 0..4 {
                    for i in 0..4 {
                        w[j * 4 + i] = (wy[j] * wx[i] * 32768.0).round_ties_even() as i32;
                        sum += w[j * 4 + i];
                    }
                }
                let diff = sum - 32768;
                if diff != 0 {
                    // The smallest or largest of the four centre weights takes the error.
                    let (mut lo, mut hi) = (5, 5);
                    for k in [5, 6, 9, 10] {
                        if w[k] < w[lo] {
                            lo = k;
                        } else if w[k] > w[hi] {
                            hi = k;
                        }
                    }
                    if diff < 0 {
                        w[hi] -= diff;
                    } else {
                        w[lo] -= diff;
                    }
                }
                table.push(w);
            }
        }
        Self(table)
    }
}

/// The perspective transform taking `from[i]` to `to[i]`, as the eight coefficients
/// of a 3x3 matrix whose last entry is 1; `None` for a degenerate quadrilateral.
fn homography(from: &[Point; 4], to: &[Point; 4]) -> Option<[f64; 8]> {
    let mut m = [[0f64; 9]; 8];
    for i in 0..4 {
        let (x, y) = (f64::from(from[i][0]), f64::from(from[i][1]));
        let (u, v) = (f64::from(to[i][0]), f64::from(to[i][1]));
        m[2 * i] = [x, y, 1.0, 0.0, 0.0, 0.0, -x * u, -y * u, u];
        m[2 * i + 1] = [0.0, 0.0, 0.0, x, y, 1.0, -x * v, -y * v, v];
    }
    // Gaussian elimination with partial pivoting.
    for col in 0..8 {
        let pivot = (col..8).max_by(|&a, &b| m[a][col].abs().total_cmp(&m[b][col].abs()))?;
        if m[pivot][col].abs() < 1e-12 {
            return None;
        }
        m.swap(col, pivot);
        let pivot_row = m[col];
        for (r, row) in m.iter_mut().enumerate() {
            if r != col {
                let f = row[col] / pivot_row[col];
                for (value, p) in row.iter_mut().zip(&pivot_row).skip(col) {
                    *value -= f * p;
                }
            }
        }
    }
    let mut h = [0f64; 8];
    for (i, v) in h.iter_mut().enumerate() {
        *v = m[i][8] / m[i][i];
    }
    Some(h)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(width: usize, height: usize) -> Bgr {
        let mut img = Bgr::new(width, height);
        for y in 0..height {
            for x in 0..width {
                let o = (y * width + x) * 3;
                img.pixels[o..o + 3].copy_from_slice(&[(x * 10) as u8, (y * 10) as u8, 7]);
            }
        }
        img
    }

    /// A 7 x 5 pattern with every level in use.
    fn pattern() -> Bgr {
        let mut img = Bgr::new(7, 5);
        for y in 0..5 {
            for x in 0..7 {
                for c in 0..3 {
                    img.pixels[(y * 7 + x) * 3 + c] = ((x * 37 + y * 91 + c * 53) % 256) as u8;
                }
            }
        }
        img
    }

    fn channel(img: &Bgr, c: usize) -> Vec<u8> {
        img.pixels.chunks(3).map(|p| p[c]).collect()
    }

    // Expected values printed by OpenCV 4.13 (opencv-python-headless) from the same
    // pattern: cv2.resize(src, (11, 8)) and (3, 2); cv2.warpPerspective with
    // INTER_CUBIC and BORDER_REPLICATE of the quad below onto 6 x 4.
    #[test]
    fn resizing_matches_opencv_to_the_level() {
        let up = [
            0, 17, 40, 64, 87, 111, 134, 158, 182, 205, 222, 40, 56, 80, 104, 127, 151, 174, 167,
            119, 133, 150, 97, 113, 135, 149, 168, 192, 215, 173, 44, 46, 63, 153, 170, 178, 89,
            65, 88, 112, 114, 86, 103, 120, 130, 147, 155, 66, 42, 65, 89, 112, 136, 159, 176, 27,
            44, 66, 79, 99, 122, 146, 169, 193, 216, 233, 68, 85, 108, 132, 155, 179, 111, 82, 106,
            129, 146, 108, 125, 148, 172, 195, 219, 79, 10, 34, 57, 74,
        ];
        assert_eq!(channel(&pattern().resize(11, 8), 0), up);
        assert_eq!(
            channel(&pattern().resize(3, 2), 0),
            [93, 179, 74, 64, 151, 173]
        );
    }

    #[test]
    fn a_perspective_crop_matches_opencv_to_the_level() {
        let quad = [[0.5, 0.7], [6.2, 1.1], [6.0, 4.4], [0.9, 3.8]];
        let warped = [
            137, 196, 241, 219, 23, 82, 137, 70, 115, 117, 109, 161, 61, 31, 98, 171, 226, 238,
            107, 159, 165, 141, 171, 166,
        ];
        assert_eq!(channel(&pattern().warp_quad(&quad, 6, 4), 1), warped);
    }

    #[test]
    fn a_warp_of_the_image_s_own_corners_is_the_image() {
        let img = gradient(12, 5);
        let corners = [[0.0, 0.0], [12.0, 0.0], [12.0, 5.0], [0.0, 5.0]];
        assert_eq!(img.warp_quad(&corners, 12, 5).pixels, img.pixels);
    }

    #[test]
    fn rotations_move_pixels_where_numpy_does() {
        let img = gradient(3, 2);
        let turned = img.rotate_90_ccw();
        assert_eq!((turned.width, turned.height), (2, 3));
        // numpy.rot90: the last column becomes the first row.
        assert_eq!(turned.at(0, 0), img.at(2, 0));
        assert_eq!(turned.at(1, 0), img.at(2, 1));
        assert_eq!(img.rotate_180().at(0, 0), img.at(2, 1));
    }

    #[test]
    fn resizing_by_two_interpolates_between_pixel_centres() {
        let img = gradient(4, 1).resize(8, 1);
        let reds: Vec<u8> = img.pixels.chunks(3).map(|p| p[0]).collect();
        // OpenCV's INTER_LINEAR: source positions -0.25 (clamped), 0.25, 0.75, ... 3.25 (clamped).
        assert_eq!(reds, [0, 3, 8, 13, 18, 23, 28, 30]);
    }
}
