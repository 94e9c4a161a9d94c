//! Places and circles for the fleet: a registered address as `LAT,LON` (WGS 84 degrees), a
//! radius (`500m`, `2km`, `1.5km`) and the great-circle distance between two places
//! (haversine on a sphere of the Earth's mean radius; the error against the ellipsoid is
//! under 0.5 %, a few metres at a city block's scale).
//!
//! Pure: no I/O, table-tested below.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Mean Earth radius (IUGG), metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A point on Earth, degrees.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatLon {
    /// Latitude, -90..=90.
    pub lat: f64,
    /// Longitude, -180..=180.
    pub lon: f64,
}

impl FromStr for LatLon {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, b) = s
            .split_once(',')
            .ok_or_else(|| format!("{s:?}: expected LAT,LON in degrees (e.g. 40.7128,-74.0060)"))?;
        let num = |t: &str, what: &str| -> Result<f64, String> {
            let v: f64 = t
                .trim()
                .parse()
                .map_err(|_| format!("{s:?}: the {what} {t:?} is not a number"))?;
            if v.is_finite() {
                Ok(v)
            } else {
                Err(format!("{s:?}: the {what} is not a finite number"))
            }
        };
        let (lat, lon) = (num(a, "latitude")?, num(b, "longitude")?);
        if !(-90.0..=90.0).contains(&lat) {
            return Err(format!("{s:?}: latitude must be within -90..90"));
        }
        if !(-180.0..=180.0).contains(&lon) {
            return Err(format!("{s:?}: longitude must be within -180..180"));
        }
        Ok(LatLon { lat, lon })
    }
}

impl fmt::Display for LatLon {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:.6},{:.6}", self.lat, self.lon)
    }
}

/// Great-circle distance in metres (haversine).
pub fn distance_m(a: LatLon, b: LatLon) -> f64 {
    let (p1, p2) = (a.lat.to_radians(), b.lat.to_radians());
    let dp = p2 - p1;
    let dl = (b.lon - a.lon).to_radians();
    let h = (dp / 2.0).sin().powi(2) + p1.cos() * p2.cos() * (dl / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

/// A radius in metres, written `500m`, `2km`, `1.5km` or a plain number of metres.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Radius(pub f64);

impl FromStr for Radius {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let (num, mult) = if let Some(n) = t.strip_suffix("km") {
            (n, 1000.0)
        } else if let Some(n) = t.strip_suffix('m') {
            (n, 1.0)
        } else {
            (t, 1.0)
        };
        let v: f64 = num
            .trim()
            .parse()
            .map_err(|_| format!("{s:?}: expected a distance like 500m or 2km"))?;
        let m = v * mult;
        if !m.is_finite() || m <= 0.0 || m > 20_100_000.0 {
            return Err(format!(
                "{s:?}: a radius must be positive and at most half the Earth's circumference"
            ));
        }
        Ok(Radius(m))
    }
}

impl fmt::Display for Radius {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 >= 1000.0 {
            write!(f, "{}km", self.0 / 1000.0)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

/// A circle: `--near LAT,LON --radius R`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Circle {
    /// Centre.
    pub center: LatLon,
    /// Radius, metres.
    pub radius_m: f64,
}

impl Circle {
    /// Whether `p` is inside the circle (on the boundary counts as inside).
    pub fn contains(&self, p: LatLon) -> bool {
        distance_m(self.center, p) <= self.radius_m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ll(lat: f64, lon: f64) -> LatLon {
        LatLon { lat, lon }
    }

    #[test]
    fn distances_match_known_values() {
        // One degree of latitude is about 111.2 km on the mean sphere.
        let d = distance_m(ll(0.0, 0.0), ll(1.0, 0.0));
        assert!((d - 111_195.0).abs() < 5.0, "{d}");
        // Antipodes: half the circumference.
        let d = distance_m(ll(0.0, 0.0), ll(0.0, 180.0));
        assert!(
            (d - std::f64::consts::PI * EARTH_RADIUS_M).abs() < 1.0,
            "{d}"
        );
        // Across the antimeridian is short, not around the world.
        let d = distance_m(ll(10.0, 179.999), ll(10.0, -179.999));
        assert!(d < 300.0, "{d}");
        assert_eq!(distance_m(ll(52.5, 13.4), ll(52.5, 13.4)), 0.0);
    }

    #[test]
    fn places_and_radii_parse_and_refuse_nonsense() {
        assert_eq!("40.5,-74.25".parse::<LatLon>().unwrap(), ll(40.5, -74.25));
        assert_eq!(" 1 , 2 ".parse::<LatLon>().unwrap(), ll(1.0, 2.0));
        for bad in ["", "1", "91,0", "0,181", "a,b", "NaN,0", "inf,0"] {
            assert!(bad.parse::<LatLon>().is_err(), "{bad}");
        }
        assert_eq!("500m".parse::<Radius>().unwrap(), Radius(500.0));
        assert_eq!("1.5km".parse::<Radius>().unwrap(), Radius(1500.0));
        assert_eq!("250".parse::<Radius>().unwrap(), Radius(250.0));
        for bad in ["0m", "-3m", "km", "5 miles", "1e9km"] {
            assert!(bad.parse::<Radius>().is_err(), "{bad}");
        }
    }

    #[test]
    fn circle_includes_its_boundary_and_excludes_just_outside() {
        let c = Circle {
            center: ll(48.0, 11.0),
            radius_m: 500.0,
        };
        // 0.0044 degrees of latitude is about 489 m; 0.0046 about 511 m.
        assert!(c.contains(ll(48.0044, 11.0)));
        assert!(!c.contains(ll(48.0046, 11.0)));
        assert!(c.contains(c.center));
    }
}
