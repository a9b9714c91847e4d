//! Viewport cropping and scaling of 8-bit rasters.

use crate::error::{ImagingError, ImagingErrorKind, ImagingResult};
use crate::render::Viewport;

/// An 8-bit image, gray (1 channel) or RGB (3 channels), row-major and interleaved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Raster {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub pixels: Vec<u8>,
}

/// Crops the viewport's source region (negative extents flip) and scales it to fit inside
/// the viewport, keeping the aspect ratio: box filter when shrinking, bilinear when growing.
pub(crate) fn crop_and_scale(raster: &Raster, viewport: &Viewport) -> ImagingResult<Raster> {
    let (mut x0, mut y0, mut region_width, mut region_height) = match viewport.source {
        Some(source) => (
            source.x as f64,
            source.y as f64,
            source.width as f64,
            source.height as f64,
        ),
        None => (0.0, 0.0, raster.width as f64, raster.height as f64),
    };
    let flip_x = region_width < 0.0;
    let flip_y = region_height < 0.0;
    if flip_x {
        x0 += region_width;
        region_width = -region_width;
    }
    if flip_y {
        y0 += region_height;
        region_height = -region_height;
    }
    // Clip the region to the image.
    let x1 = (x0 + region_width).min(raster.width as f64);
    let y1 = (y0 + region_height).min(raster.height as f64);
    let x0 = x0.max(0.0);
    let y0 = y0.max(0.0);
    if x1 - x0 < 1.0 || y1 - y0 < 1.0 {
        return Err(ImagingError::new(
            ImagingErrorKind::UnsupportedImage,
            "the viewport source region lies outside the image",
        ));
    }
    let region_width = x1 - x0;
    let region_height = y1 - y0;
    let scale =
        (f64::from(viewport.width) / region_width).min(f64::from(viewport.height) / region_height);
    let out_width =
        ((region_width * scale).round() as usize).clamp(1, viewport.width.max(1) as usize);
    let out_height =
        ((region_height * scale).round() as usize).clamp(1, viewport.height.max(1) as usize);
    let step_x = region_width / out_width as f64;
    let step_y = region_height / out_height as f64;
    let channels = raster.channels;
    let mut pixels = Vec::with_capacity(out_width * out_height * channels);
    for out_y in 0..out_height {
        let row = if flip_y {
            out_height - 1 - out_y
        } else {
            out_y
        };
        let src_y0 = y0 + row as f64 * step_y;
        for out_x in 0..out_width {
            let column = if flip_x { out_width - 1 - out_x } else { out_x };
            let src_x0 = x0 + column as f64 * step_x;
            for channel in 0..channels {
                let value = if step_x >= 1.0 || step_y >= 1.0 {
                    box_average(
                        raster,
                        channel,
                        src_x0,
                        src_y0,
                        step_x.max(1.0),
                        step_y.max(1.0),
                    )
                } else {
                    bilinear(
                        raster,
                        channel,
                        src_x0 + step_x / 2.0 - 0.5,
                        src_y0 + step_y / 2.0 - 0.5,
                    )
                };
                pixels.push(value);
            }
        }
    }
    Ok(Raster {
        width: out_width,
        height: out_height,
        channels,
        pixels,
    })
}

fn sample(raster: &Raster, channel: usize, x: usize, y: usize) -> f64 {
    f64::from(raster.pixels[(y * raster.width + x) * raster.channels + channel])
}

fn box_average(raster: &Raster, channel: usize, x0: f64, y0: f64, width: f64, height: f64) -> u8 {
    let first_x = (x0.floor() as usize).min(raster.width - 1);
    let first_y = (y0.floor() as usize).min(raster.height - 1);
    let last_x = ((x0 + width).ceil() as usize).clamp(first_x + 1, raster.width);
    let last_y = ((y0 + height).ceil() as usize).clamp(first_y + 1, raster.height);
    let mut sum = 0.0;
    for y in first_y..last_y {
        for x in first_x..last_x {
            sum += sample(raster, channel, x, y);
        }
    }
    let count = ((last_x - first_x) * (last_y - first_y)) as f64;
    (sum / count).round().clamp(0.0, 255.0) as u8
}

fn bilinear(raster: &Raster, channel: usize, x: f64, y: f64) -> u8 {
    let x = x.clamp(0.0, (raster.width - 1) as f64);
    let y = y.clamp(0.0, (raster.height - 1) as f64);
    let left = x.floor() as usize;
    let top = y.floor() as usize;
    let right = (left + 1).min(raster.width - 1);
    let bottom = (top + 1).min(raster.height - 1);
    let fx = x - left as f64;
    let fy = y - top as f64;
    let upper =
        sample(raster, channel, left, top) * (1.0 - fx) + sample(raster, channel, right, top) * fx;
    let lower = sample(raster, channel, left, bottom) * (1.0 - fx)
        + sample(raster, channel, right, bottom) * fx;
    (upper * (1.0 - fy) + lower * fy).round().clamp(0.0, 255.0) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::SourceRect;

    fn gradient(width: usize, height: usize) -> Raster {
        Raster {
            width,
            height,
            channels: 1,
            pixels: (0..width * height)
                .map(|index| (index % width) as u8)
                .collect(),
        }
    }

    #[test]
    fn test_scales_to_fit_keeping_aspect_ratio() {
        let raster = gradient(128, 64);
        let scaled = crop_and_scale(
            &raster,
            &Viewport {
                width: 64,
                height: 64,
                source: None,
            },
        )
        .unwrap();
        assert_eq!((scaled.width, scaled.height), (64, 32));
        let grown = crop_and_scale(
            &raster,
            &Viewport {
                width: 256,
                height: 512,
                source: None,
            },
        )
        .unwrap();
        assert_eq!((grown.width, grown.height), (256, 128));
    }

    #[test]
    fn test_negative_source_width_flips() {
        let raster = gradient(4, 1);
        let flipped = crop_and_scale(
            &raster,
            &Viewport {
                width: 4,
                height: 1,
                source: Some(SourceRect {
                    x: 4,
                    y: 0,
                    width: -4,
                    height: 1,
                }),
            },
        )
        .unwrap();
        assert_eq!(flipped.pixels, vec![3, 2, 1, 0]);
    }

    #[test]
    fn test_source_outside_the_image_is_an_error() {
        let raster = gradient(4, 4);
        let viewport = Viewport {
            width: 4,
            height: 4,
            source: Some(SourceRect {
                x: 10,
                y: 10,
                width: 2,
                height: 2,
            }),
        };
        assert!(crop_and_scale(&raster, &viewport).is_err());
    }
}
