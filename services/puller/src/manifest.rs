//! Manifests berth accepts: OCI image manifest and index, Docker schema 2 manifest and
//! manifest list. Schema 1 and anything else are refused with the media type named. A manifest
//! from a registry must be served as one of those four types (`Content-Type`), and a
//! `mediaType` in its body must say the same.

use crate::error::PullError;
use berth_docker::platform::Platform;
use oci_spec::image::{Descriptor, ImageIndex, ImageManifest};

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const DOCKER_SCHEMA1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";

/// The `Accept` header of manifest requests.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.docker.distribution.manifest.v2+json";

const LAYER_TYPES: [&str; 9] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

#[derive(Debug)]
pub enum Parsed {
    Index(Box<ImageIndex>),
    Image(Box<ImageManifest>),
}

/// The media types a registry may serve a manifest as.
pub const SERVED_TYPES: [&str; 4] = [OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_LIST];

/// Parse a manifest as a registry served it: `content_type` (without parameters) must be one
/// of [`SERVED_TYPES`], and the body's `mediaType`, when present, the same (as the OCI
/// distribution spec has clients check). No sniffing: a manifest served as `application/json`
/// is refused, naming the type received. A schema 1 body is named as such whatever its type.
pub fn parse_served(
    reference: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(Parsed, String), PullError> {
    let v: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |k: &str| v.as_ref().and_then(|v| v.get(k));
    let schema1 = field("schemaVersion").and_then(|s| s.as_u64()) == Some(1)
        || matches!(content_type, Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED));
    if schema1 {
        return parse(reference, body, content_type);
    }
    let refuse = |reason: String| PullError::UnsupportedManifest {
        reference: reference.to_string(),
        reason,
    };
    let served = match content_type {
        Some(t) if SERVED_TYPES.contains(&t) => t,
        Some(t) => {
            return Err(refuse(format!(
                "the registry served the manifest with media type {t:?} (Content-Type), \
                 not an OCI or Docker schema 2 manifest or index"
            )))
        }
        None => {
            return Err(refuse(
                "the registry served the manifest without a Content-Type; an OCI or Docker \
                 schema 2 manifest or index type is required"
                    .into(),
            ))
        }
    };
    if let Some(declared) = field("mediaType") {
        let declared = declared.as_str().unwrap_or_default();
        if declared != served {
            return Err(refuse(format!(
                "the registry served the manifest as {served:?} (Content-Type) but its \
                 mediaType field says {declared:?}"
            )));
        }
    }
    parse(reference, body, Some(served))
}

/// Parse a manifest body, deciding its kind from its `mediaType` (or the Content-Type, or its
/// shape when both are absent, as OCI allows).
pub fn parse(
    reference: &str,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<(Parsed, String), PullError> {
    let malformed = |reason: String| PullError::Malformed {
        reference: reference.to_string(),
        what: "manifest".into(),
        reason,
    };
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| malformed(format!("not JSON: {e}")))?;
    let schema = v.get("schemaVersion").and_then(|s| s.as_u64());
    let declared = v
        .get("mediaType")
        .and_then(|m| m.as_str())
        .map(str::to_string);
    if schema == Some(1)
        || matches!(
            declared.as_deref().or(content_type),
            Some(DOCKER_SCHEMA1 | DOCKER_SCHEMA1_SIGNED)
        )
    {
        return Err(PullError::UnsupportedManifest {
            reference: reference.to_string(),
            reason: "Docker image manifest schema 1 is not supported (deprecated since 2017); \
                     push the image again with a current tool"
                .into(),
        });
    }
    if schema != Some(2) {
        return Err(malformed(format!(
            "schemaVersion is {}, expected 2",
            schema
                .map(|s| s.to_string())
                .unwrap_or_else(|| "missing".into())
        )));
    }
    let media_type = match declared.or_else(|| content_type.map(str::to_string)) {
        Some(m) if m != "application/json" && m != "application/octet-stream" && !m.is_empty() => m,
        _ if v.get("manifests").is_some() => OCI_INDEX.to_string(),
        _ if v.get("layers").is_some() => OCI_MANIFEST.to_string(),
        _ => return Err(malformed("neither a manifest nor an index".into())),
    };
    match media_type.as_str() {
        OCI_INDEX | DOCKER_LIST => {
            let idx: ImageIndex =
                serde_json::from_value(v).map_err(|e| malformed(format!("index: {e}")))?;
            Ok((Parsed::Index(Box::new(idx)), media_type))
        }
        OCI_MANIFEST | DOCKER_MANIFEST => {
            let m: ImageManifest =
                serde_json::from_value(v).map_err(|e| malformed(format!("image manifest: {e}")))?;
            check_image(reference, &m)?;
            Ok((Parsed::Image(Box::new(m)), media_type))
        }
        other => Err(PullError::UnsupportedManifest {
            reference: reference.to_string(),
            reason: format!("manifest media type {other:?} is not an image berth can run"),
        }),
    }
}

fn check_image(reference: &str, m: &ImageManifest) -> Result<(), PullError> {
    let ct = m.config().media_type().to_string();
    if ct != OCI_CONFIG && ct != DOCKER_CONFIG {
        return Err(PullError::UnsupportedManifest {
            reference: reference.to_string(),
            reason: format!("config media type {ct:?} is not a container image config"),
        });
    }
    for l in m.layers() {
        let lt = l.media_type().to_string();
        if !LAYER_TYPES.contains(&lt.as_str()) {
            return Err(PullError::UnsupportedManifest {
                reference: reference.to_string(),
                reason: format!(
                    "layer {} has media type {lt:?}, which berth cannot unpack",
                    l.digest()
                ),
            });
        }
    }
    Ok(())
}

/// The entries of an index that name a platform, as [`Platform::pick`] takes them.
pub fn index_entries<'a>(
    manifests: &[&'a Descriptor],
) -> Vec<(String, String, Option<String>, &'a Descriptor)> {
    manifests
        .iter()
        .filter_map(|d| {
            let p = d.platform().as_ref()?;
            Some((
                p.os().to_string(),
                p.architecture().to_string(),
                p.variant().clone(),
                *d,
            ))
        })
        .collect()
}

/// Choose the manifest for `want` from an index.
pub fn select<'a>(
    reference: &str,
    idx: &'a ImageIndex,
    want: &Platform,
) -> Result<&'a Descriptor, PullError> {
    let images: Vec<&Descriptor> = idx
        .manifests()
        .iter()
        .filter(|d| {
            let t = d.media_type().to_string();
            t == OCI_MANIFEST || t == DOCKER_MANIFEST
        })
        .collect();
    if let Some(d) = want.pick(index_entries(&images)) {
        return Ok(d);
    }
    let mut available: Vec<String> = images
        .iter()
        .filter_map(|d| d.platform().as_ref())
        .map(|p| {
            let mut s = format!("{}/{}", p.os(), p.architecture());
            if let Some(v) = p.variant() {
                s.push('/');
                s.push_str(v);
            }
            s
        })
        .collect();
    available.dedup();
    Err(PullError::NoPlatform {
        reference: reference.to_string(),
        wanted: want.to_string(),
        available: if available.is_empty() {
            "no image manifests".into()
        } else {
            available.join(", ")
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn manifest(mt: &str, layer_type: &str) -> String {
        format!(
            r#"{{"schemaVersion":2,"mediaType":"{mt}","config":{{"mediaType":"{}","digest":"{D1}","size":2}},"layers":[{{"mediaType":"{layer_type}","digest":"{D2}","size":3}}]}}"#,
            if mt == DOCKER_MANIFEST {
                DOCKER_CONFIG
            } else {
                OCI_CONFIG
            }
        )
    }

    #[test]
    fn image_manifests() {
        for (mt, lt) in [
            (OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar+zstd"),
            (OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar"),
            (
                DOCKER_MANIFEST,
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
            ),
        ] {
            let (p, t) = parse("r", manifest(mt, lt).as_bytes(), None).unwrap();
            assert_eq!(t, mt);
            assert!(matches!(p, Parsed::Image(_)));
        }
        // No mediaType in the body: the Content-Type decides, then the shape.
        let body = manifest(OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar")
            .replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
        let (_, t) = parse("r", body.as_bytes(), None).unwrap();
        assert_eq!(t, OCI_MANIFEST);
    }

    #[test]
    fn refusals_name_the_media_type() {
        let e = parse(
            "r",
            br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#,
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
        let e = parse(
            "r",
            manifest(OCI_MANIFEST, "application/x-helm").as_bytes(),
            None,
        )
        .unwrap_err();
        assert!(e.to_string().contains("application/x-helm"), "{e}");
        let e = parse(
            "r",
            br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart"}"#,
            None,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("application/vnd.cncf.helm.chart"),
            "{e}"
        );
        assert!(parse("r", b"nope", None)
            .unwrap_err()
            .to_string()
            .contains("not JSON"));
    }

    #[test]
    fn served_types_are_checked() {
        let body = manifest(OCI_MANIFEST, "application/vnd.oci.image.layer.v1.tar");
        let (p, t) = parse_served("r:v1", body.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(t, OCI_MANIFEST);
        assert!(matches!(p, Parsed::Image(_)));
        for ct in [
            Some("application/json"),
            Some("application/octet-stream"),
            Some("text/plain"),
            None,
        ] {
            let e = parse_served("r:v1", body.as_bytes(), ct).unwrap_err();
            let msg = e.to_string();
            assert!(msg.starts_with("r:v1: "), "{msg}");
            match ct {
                Some(ct) => assert!(msg.contains(&format!("{ct:?}")), "{msg}"),
                None => assert!(msg.contains("without a Content-Type"), "{msg}"),
            }
            assert!(matches!(e, PullError::UnsupportedManifest { .. }));
        }
        // The header and the body disagree.
        let e = parse_served("r:v1", body.as_bytes(), Some(DOCKER_MANIFEST)).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(DOCKER_MANIFEST)
                && msg.contains(OCI_MANIFEST)
                && msg.contains("mediaType"),
            "{msg}"
        );
        // No mediaType in the body: the header decides.
        let bare = body.replace(&format!(r#""mediaType":"{OCI_MANIFEST}","#), "");
        let (_, t) = parse_served("r", bare.as_bytes(), Some(OCI_MANIFEST)).unwrap();
        assert_eq!(t, OCI_MANIFEST);
        // Schema 1 is named as such, whatever it was served as.
        let e = parse_served(
            "r",
            br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#,
            Some("application/json"),
        )
        .unwrap_err();
        assert!(e.to_string().contains("schema 1"), "{e}");
    }

    #[test]
    fn index_selection() {
        let body = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_LIST}","manifests":[
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D1}","size":1,"platform":{{"os":"linux","architecture":"arm64","variant":"v8"}}}},
            {{"mediaType":"{DOCKER_MANIFEST}","digest":"{D2}","size":1,"platform":{{"os":"linux","architecture":"amd64"}}}}]}}"#
        );
        let (p, _) = parse("r", body.as_bytes(), None).unwrap();
        let Parsed::Index(idx) = p else { panic!() };
        let d = select("r", &idx, &Platform::parse("linux/amd64").unwrap()).unwrap();
        assert_eq!(d.digest().to_string(), D2);
        let d = select("r", &idx, &Platform::parse("linux/arm64").unwrap()).unwrap();
        assert_eq!(d.digest().to_string(), D1);
        let e = select("r", &idx, &Platform::parse("linux/s390x").unwrap()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("linux/s390x") && msg.contains("linux/arm64/v8, linux/amd64"),
            "{msg}"
        );
    }
}
