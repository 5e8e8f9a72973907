//! Text lines in an image, as PP-OCR finds and reads them: PNG or JPEG bytes in, each
//! line's text, score and box out. The handler does all the work around the three
//! models, inside the sandbox — decoding the image, sizing it for the detector,
//! turning the detector's probability map into boxes, cutting each line out straight,
//! turning upside-down lines (the direction classifier) and decoding the recogniser's
//! output (CTC, greedy) with the character list that ships with the model — and the
//! host runs the models. The steps and their settings are rapidocr-onnxruntime
//! 1.4.4's, so the results match it.
//!
//! Arguments (`[args]`): `det`, `cls`, `rec` (the models' names in `[models]`,
//! default `det`, `cls`, `rec`), `characters` (the recogniser's character list, one
//! a line, default `/dict/ppocr_keys.txt`), `use_cls` (default `true`), `text_score`
//! (lines read with a lower mean confidence are dropped; default 0.5), `box_threshold`
//! (default 0.5), `unclip_ratio` (default 1.6), `max_side` (the largest image side
//! accepted, in pixels; default 8192).

mod detect;
mod raster;

use detect::DetectSettings;
use raster::{Bgr, Point};
use runinfer_sdk::*;
use serde_json::json;

const ARGS: [&str; 9] = [
    "det",
    "cls",
    "rec",
    "characters",
    "use_cls",
    "text_score",
    "box_threshold",
    "unclip_ratio",
    "max_side",
];

/// rapidocr's global settings: an image is brought within these sides first.
const MAX_SIDE: usize = 2000;
const MIN_SIDE: usize = 30;
/// Lines this thin, or images wider than this ratio, get black bands above and below
/// before detection (rapidocr's letterbox).
const MIN_HEIGHT: usize = 30;
const WIDTH_HEIGHT_RATIO: f64 = 8.0;
/// The detector's shorter side.
const DET_MIN_SIDE: usize = 736;
/// The classifier's and the recogniser's input height, and their widths.
const LINE_HEIGHT: usize = 48;
const CLS_WIDTH: usize = 192;
const REC_WIDTH: usize = 320;
/// Lines per classifier or recogniser run (rapidocr's batch size: the padding width of
/// a recogniser batch depends on its widest line, so this keeps results identical).
const LINES_PER_RUN: usize = 6;
/// A line the classifier finds upside down with at least this probability is turned.
const CLS_THRESHOLD: f32 = 0.9;

struct Models {
    det: Model,
    cls: Model,
    rec: Model,
    /// Index 0 is CTC's blank, the last is the space.
    characters: Vec<String>,
}

struct Ocr {
    names: [String; 3],
    characters_path: String,
    use_cls: bool,
    text_score: f32,
    max_side: u32,
    detect: DetectSettings,
    models: Option<Models>,
}

impl Default for Ocr {
    fn default() -> Self {
        Self {
            names: ["det".into(), "cls".into(), "rec".into()],
            characters_path: "/dict/ppocr_keys.txt".into(),
            use_cls: true,
            text_score: 0.5,
            max_side: 8192,
            detect: DetectSettings {
                threshold: 0.3,
                box_threshold: 0.5,
                max_candidates: 1000,
                unclip_ratio: 1.6,
            },
            models: None,
        }
    }
}

/// One line found.
struct Line {
    text: String,
    score: f32,
    corners: [Point; 4],
}

fn parse<T: std::str::FromStr>(
    args: &Args,
    name: &str,
    valid: impl Fn(&T) -> bool,
    expected: &str,
) -> Result<Option<T>, Error> {
    match arg(args, name) {
        None => Ok(None),
        Some(v) => v
            .parse()
            .ok()
            .filter(|t| valid(t))
            .map(Some)
            .ok_or_else(|| {
                Error::invalid_input(format!("args.{name}: expected {expected}, got `{v}`"))
            }),
    }
}

impl ModelHandler for Ocr {
    fn configure(&mut self, args: &Args) -> Result<(), Error> {
        if let Some((name, _)) = args.iter().find(|(k, _)| !ARGS.contains(&k.as_str())) {
            return Err(Error::invalid_input(format!(
                "unknown arg `{name}` (ocr takes {})",
                ARGS.join(", ")
            )));
        }
        for (slot, key) in self.names.iter_mut().zip(["det", "cls", "rec"]) {
            if let Some(name) = arg(args, key) {
                *slot = name.to_string();
            }
        }
        if let Some(path) = arg(args, "characters") {
            self.characters_path = path.to_string();
        }
        let unit = |v: &f32| (0.0..=1.0).contains(v);
        if let Some(v) = parse(args, "use_cls", |_: &bool| true, "true or false")? {
            self.use_cls = v;
        }
        if let Some(v) = parse(args, "text_score", unit, "a number from 0 to 1")? {
            self.text_score = v;
        }
        if let Some(v) = parse(args, "box_threshold", unit, "a number from 0 to 1")? {
            self.detect.box_threshold = v;
        }
        let ratio = |v: &f32| (0.5..=8.0).contains(v);
        if let Some(v) = parse(args, "unclip_ratio", ratio, "a number from 0.5 to 8")? {
            self.detect.unclip_ratio = v;
        }
        let side = |v: &u32| (32..=16_384).contains(v);
        if let Some(v) = parse(args, "max_side", side, "32 to 16384 pixels")? {
            self.max_side = v;
        }
        Ok(())
    }

    fn signature(&self) -> Signature {
        Signature {
            inputs: ValueKind::Bytes,
            outputs: ValueKind::Json,
        }
    }

    fn load_model(&mut self) -> Result<(), Error> {
        let [det, cls, rec] = &self.names;
        let open = |name: &str| -> Result<Model, Error> {
            let model = Model::open(name)?;
            match model.inputs().as_slice() {
                [input] if input.shape.len() == 4 && input.dtype == Dtype::F32 => Ok(model),
                _ => Err(Error::model(format!(
                    "model `{name}` must take one f32 image batch [n, 3, h, w]"
                ))),
            }
        };
        let (det, cls, rec) = (open(det)?, open(cls)?, open(rec)?);
        let text = std::fs::read_to_string(&self.characters_path).map_err(|e| {
            Error::invalid_input(format!("character list {}: {e}", self.characters_path))
        })?;
        let mut characters = vec![String::new()];
        characters.extend(text.lines().map(str::to_string));
        characters.push(" ".into());
        // The recogniser scores every character of the list, plus the blank and the
        // space: a list that does not fit the model would read wrong text silently.
        let classes = rec
            .outputs()
            .first()
            .and_then(|o| o.shape.last().copied().flatten());
        if classes.is_some_and(|n| n != characters.len() as u64) {
            return Err(Error::model(format!(
                "the recogniser scores {} classes but {} has {} characters (+ blank and space)",
                classes.unwrap_or(0),
                self.characters_path,
                characters.len() - 2
            )));
        }
        self.models = Some(Models {
            det,
            cls,
            rec,
            characters,
        });
        Ok(())
    }

    fn run_inference(&mut self, batch: Vec<Value>, _args: &Args) -> Result<Vec<Value>, Error> {
        let models = self
            .models
            .as_ref()
            .ok_or_else(|| Error::internal("load_model was not called"))?;
        // An image the handler refuses fails the call; the host then asks for each
        // image alone, so only the bad one is refused.
        batch
            .into_iter()
            .map(|value| {
                let bytes = match value {
                    Value::Bytes(bytes) => bytes,
                    other => {
                        return Err(Error::invalid_input(format!(
                            "expected image bytes, got {}",
                            other.kind()
                        )));
                    }
                };
                let image =
                    Bgr::decode(&bytes, self.max_side, 64 << 20).map_err(Error::invalid_input)?;
                let lines = self.read(models, image)?;
                let lines: Vec<_> = lines
                    .into_iter()
                    .map(|line| {
                        json!({
                            "text": line.text,
                            "score": line.score,
                            "box": line.corners,
                        })
                    })
                    .collect();
                Ok(Value::Json(json!({ "lines": lines }).to_string()))
            })
            .collect()
    }
}

impl Ocr {
    /// rapidocr's pipeline for one image.
    fn read(&self, models: &Models, image: Bgr) -> Result<Vec<Line>, Error> {
        let (raw_width, raw_height) = (image.width as f32, image.height as f32);
        let (image, ratio_w, ratio_h) = fit_sides(image)?;
        let (image, top) = letterbox(image);
        let boxes = self.detect(models, &image)?;
        let boxes = reading_order(boxes);
        let mut crops: Vec<Bgr> = boxes.iter().map(|b| crop(&image, b)).collect();
        if self.use_cls {
            classify(models, &mut crops)?;
        }
        let read = recognise(models, &crops)?;
        Ok(boxes
            .into_iter()
            .zip(read)
            .filter(|(_, (_, score))| *score >= self.text_score)
            .map(|(corners, (text, score))| Line {
                text,
                score,
                // Back to the image as given.
                corners: corners.map(|[x, y]| {
                    [
                        (x * ratio_w).clamp(0.0, raw_width),
                        ((y - top as f32) * ratio_h).clamp(0.0, raw_height),
                    ]
                }),
            })
            .collect())
    }

    fn detect(&self, models: &Models, image: &Bgr) -> Result<Vec<[Point; 4]>, Error> {
        let Some((width, height)) = detect::input_size(image.width, image.height, DET_MIN_SIDE)
        else {
            return Ok(Vec::new());
        };
        let resized = image.resize(width, height);
        let mut input = vec![0f32; 3 * width * height];
        resized.write_normalized(&mut input, width);
        let input = Tensor::from_f32(&[1, 3, height as u64, width as u64], &input)?;
        let output = first_output(models.det.run_one(&input)?)?;
        if output.shape() != [1, 1, height as u64, width as u64] {
            return Err(Error::model(format!(
                "the detector returned shape {:?} for an image of {width} x {height}",
                output.shape()
            )));
        }
        let probability = output.to_f32()?;
        Ok(detect::boxes(
            &probability,
            width,
            height,
            image.width,
            image.height,
            &self.detect,
        ))
    }
}

/// rapidocr's `reduce_max_side` / `increase_min_side`: the image within 2000 and 30
/// pixels a side (both sides then rounded to a multiple of 32), and the ratios that
/// take its coordinates back.
fn fit_sides(image: Bgr) -> Result<(Bgr, f32, f32), Error> {
    let (w, h) = (image.width, image.height);
    let ratio = if w.max(h) > MAX_SIDE {
        MAX_SIDE as f64 / w.max(h) as f64
    } else if w.min(h) < MIN_SIDE {
        MIN_SIDE as f64 / w.min(h) as f64
    } else {
        return Ok((image, 1.0, 1.0));
    };
    let round32 =
        |side: usize| ((side as f64 * ratio).trunc() / 32.0).round_ties_even() as usize * 32;
    let (rw, rh) = (round32(w), round32(h));
    if rw == 0 || rh == 0 || rw.max(rh) > 4 * MAX_SIDE {
        return Err(Error::invalid_input(format!(
            "an image of {w} x {h} pixels cannot be read (too thin)"
        )));
    }
    Ok((
        image.resize(rw, rh),
        w as f32 / rw as f32,
        h as f32 / rh as f32,
    ))
}

/// Black bands above and below a thin or very wide image, so the detector sees the
/// line with some room; returns the band's height.
fn letterbox(image: Bgr) -> (Bgr, usize) {
    let (w, h) = (image.width, image.height);
    if h > MIN_HEIGHT && (w as f64 / h as f64) <= WIDTH_HEIGHT_RATIO {
        return (image, 0);
    }
    let wanted = ((w as f64 / WIDTH_HEIGHT_RATIO) as usize).max(MIN_HEIGHT) * 2;
    let band = wanted.abs_diff(h) / 2;
    (image.pad_vertical(band), band)
}

/// Top to bottom, then left to right for boxes whose tops are within 10 pixels
/// (rapidocr's `sorted_boxes`).
fn reading_order(mut boxes: Vec<[Point; 4]>) -> Vec<[Point; 4]> {
    boxes.sort_by(|a, b| (a[0][1], a[0][0]).partial_cmp(&(b[0][1], b[0][0])).unwrap());
    for i in 0..boxes.len().saturating_sub(1) {
        for j in (0..=i).rev() {
            if (boxes[j + 1][0][1] - boxes[j][0][1]).abs() < 10.0
                && boxes[j + 1][0][0] < boxes[j][0][0]
            {
                boxes.swap(j, j + 1);
            } else {
                break;
            }
        }
    }
    boxes
}

fn distance(a: Point, b: Point) -> f32 {
    ((a[0] - b[0]).powi(2) + (a[1] - b[1]).powi(2)).sqrt()
}

/// The box's line cut out straight; a line much taller than wide is turned to lie
/// flat.
fn crop(image: &Bgr, corners: &[Point; 4]) -> Bgr {
    let [tl, tr, br, bl] = *corners;
    let width = distance(tl, tr).max(distance(br, bl)) as usize;
    let height = distance(tl, bl).max(distance(tr, br)) as usize;
    let line = image.warp_quad(corners, width.max(1), height.max(1));
    if line.height as f32 / line.width as f32 >= 1.5 {
        line.rotate_90_ccw()
    } else {
        line
    }
}

/// Line indices from the narrowest to the widest (rapidocr batches lines of similar
/// shape together).
fn by_aspect(lines: &[Bgr]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..lines.len()).collect();
    order.sort_by(|&a, &b| aspect(&lines[a]).total_cmp(&aspect(&lines[b])));
    order
}

fn aspect(line: &Bgr) -> f64 {
    line.width as f64 / line.height as f64
}

/// Each line resized to the model's height keeping its aspect (at most `width`), at
/// the left of a zero-padded `[3, 48, width]` slot.
fn line_batch(lines: &[&Bgr], width: usize) -> Result<Tensor, Error> {
    let slot = 3 * LINE_HEIGHT * width;
    let mut input = vec![0f32; slot * lines.len()];
    for (line, out) in lines.iter().zip(input.chunks_exact_mut(slot)) {
        let scaled = ((LINE_HEIGHT as f64 * aspect(line)).ceil() as usize).clamp(1, width);
        line.resize(scaled, LINE_HEIGHT)
            .write_normalized(out, width);
    }
    Tensor::from_f32(
        &[lines.len() as u64, 3, LINE_HEIGHT as u64, width as u64],
        &input,
    )
}

/// The direction classifier: lines it finds upside down (class 1 with probability
/// above 0.9) are turned by 180°.
fn classify(models: &Models, lines: &mut [Bgr]) -> Result<(), Error> {
    let order = by_aspect(lines);
    for chunk in order.chunks(LINES_PER_RUN) {
        let batch: Vec<&Bgr> = chunk.iter().map(|&i| &lines[i]).collect();
        let output = first_output(models.cls.run_one(&line_batch(&batch, CLS_WIDTH)?)?)?;
        let probabilities = output.to_f32()?;
        if output.shape() != [chunk.len() as u64, 2] {
            return Err(Error::model(format!(
                "the direction classifier returned shape {:?} for {} lines",
                output.shape(),
                chunk.len()
            )));
        }
        for (&i, p) in chunk.iter().zip(probabilities.chunks_exact(2)) {
            if p[1] > p[0] && p[1] > CLS_THRESHOLD {
                lines[i] = lines[i].rotate_180();
            }
        }
    }
    Ok(())
}

/// The recogniser and CTC greedy decoding: each line's text and mean confidence.
fn recognise(models: &Models, lines: &[Bgr]) -> Result<Vec<(String, f32)>, Error> {
    let mut read = vec![(String::new(), 0.0); lines.len()];
    let order = by_aspect(lines);
    for chunk in order.chunks(LINES_PER_RUN) {
        let widest = chunk
            .iter()
            .map(|&i| aspect(&lines[i]))
            .fold(REC_WIDTH as f64 / LINE_HEIGHT as f64, f64::max);
        let width = (LINE_HEIGHT as f64 * widest) as usize;
        let batch: Vec<&Bgr> = chunk.iter().map(|&i| &lines[i]).collect();
        let output = first_output(models.rec.run_one(&line_batch(&batch, width)?)?)?;
        let classes = models.characters.len();
        let [n, steps, c] = output.shape()[..] else {
            return Err(Error::model(format!(
                "the recogniser returned shape {:?}",
                output.shape()
            )));
        };
        if n != chunk.len() as u64 || c != classes as u64 {
            return Err(Error::model(format!(
                "the recogniser returned shape {:?} for {} lines and {classes} classes",
                output.shape(),
                chunk.len()
            )));
        }
        let scores = output.to_f32()?;
        for (&i, row) in chunk
            .iter()
            .zip(scores.chunks_exact(steps as usize * classes))
        {
            read[i] = ctc_greedy(row, classes, &models.characters);
        }
    }
    Ok(read)
}

/// The most likely class at each step; repeats merged, blanks dropped; the score is
/// the mean probability of the characters kept (0 for none).
fn ctc_greedy(scores: &[f32], classes: usize, characters: &[String]) -> (String, f32) {
    let mut text = String::new();
    let (mut sum, mut kept) = (0f32, 0usize);
    let mut previous = None;
    for step in scores.chunks_exact(classes) {
        let (best, p) = step
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, p)| if p > b.1 { (i, p) } else { b });
        if best != 0 && previous != Some(best) {
            text.push_str(&characters[best]);
            sum += p;
            kept += 1;
        }
        previous = Some(best);
    }
    let score = if kept == 0 { 0.0 } else { sum / kept as f32 };
    (text, score)
}

fn first_output(outputs: Vec<(String, Tensor)>) -> Result<Tensor, Error> {
    outputs
        .into_iter()
        .next()
        .map(|(_, t)| t)
        .ok_or_else(|| Error::model("the model returned no output"))
}

export_handler!(Ocr);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ctc_merges_repeats_and_drops_blanks() {
        let characters: Vec<String> = ["", "a", "b", " "].map(String::from).to_vec();
        // Steps: a, a, blank, a, b, b -> "aab".
        let best = [1, 1, 0, 1, 2, 2];
        let scores: Vec<f32> = best
            .iter()
            .flat_map(|&b| (0..4).map(move |c| if c == b { 0.8 } else { 0.05 }))
            .collect();
        let (text, score) = ctc_greedy(&scores, 4, &characters);
        assert_eq!(text, "aab");
        assert!((score - 0.8).abs() < 1e-6);
        assert_eq!(
            ctc_greedy(&[0.9, 0.1, 0.0, 0.0], 4, &characters),
            (String::new(), 0.0)
        );
    }

    #[test]
    fn thin_wide_lines_get_black_bands_and_boxes_read_top_to_bottom() {
        let (padded, band) = letterbox(Bgr::new(600, 40));
        // max(600 / 8, 30) * 2 = 150 rows wanted: 55 above and below.
        assert_eq!((band, padded.height), (55, 150));
        let at = |x: f32, y: f32| [[x, y], [x + 10.0, y], [x + 10.0, y + 5.0], [x, y + 5.0]];
        let order = reading_order(vec![at(50.0, 40.0), at(10.0, 44.0), at(0.0, 0.0)]);
        assert_eq!(order, vec![at(0.0, 0.0), at(10.0, 44.0), at(50.0, 40.0)]);
    }
}
