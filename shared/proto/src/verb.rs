//! A verb is one declaration: the service that serves it, its name (the last token of its
//! subject `berth.v1.<node>.<service>.<verb>`), the request it takes and the reply it gives.
//! The router of the service registers it by its type (`Router::verb::<V>`) and every caller
//! sends it by its type (`Bus::ask::<V>`), so the two sides cannot disagree on a name or a
//! type. Each service module declares its verbs with [`verbs!`] in a `verbs` submodule, with
//! the list of all of them (`verbs::ALL`), which the service's router must serve exactly.

use crate::Service;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// One verb of one service.
pub trait Verb: 'static {
    const SERVICE: Service;
    const NAME: &'static str;
    type Request: Serialize + DeserializeOwned + Send + Sync + 'static;
    type Reply: Serialize + DeserializeOwned + Send + 'static;
}

/// The body of a request or a reply that carries nothing: `{}` on the wire.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Empty {}

/// Declare the verbs of one service: `Type = NAME, Request => Reply;` each, and `ALL`, the
/// names of all of them.
#[macro_export]
macro_rules! verbs {
    ($service:expr; $( $(#[$doc:meta])* $ty:ident = $name:expr, $req:ty => $rep:ty; )+) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy, Default)]
            pub struct $ty;
            impl $crate::verb::Verb for $ty {
                const SERVICE: $crate::Service = $service;
                const NAME: &'static str = $name;
                type Request = $req;
                type Reply = $rep;
            }
        )+
        /// The names of every verb of this service.
        pub const ALL: &[&str] = &[$($name),+];
    };
}

/// The names of every verb `service` declares.
pub fn declared(service: Service) -> &'static [&'static str] {
    match service {
        Service::Supervisor => crate::supervisor::verbs::ALL,
        Service::Isolator => crate::isolator::verbs::ALL,
        Service::LayerStore => crate::layer_store::verbs::ALL,
        Service::Puller => crate::puller::verbs::ALL,
        Service::Reconciler => crate::reconciler::verbs::ALL,
    }
}

#[cfg(test)]
mod tests {
    use crate::{isolator, layer_store, puller, reconciler, supervisor, Service};

    #[test]
    fn names_are_unique_within_a_service_and_subjects_are_well_formed() {
        for (service, all) in [
            (Service::Supervisor, supervisor::verbs::ALL),
            (Service::Isolator, isolator::verbs::ALL),
            (Service::LayerStore, layer_store::verbs::ALL),
            (Service::Puller, puller::verbs::ALL),
            (Service::Reconciler, reconciler::verbs::ALL),
        ] {
            let mut seen = std::collections::BTreeSet::new();
            for v in all {
                assert!(seen.insert(*v), "{service:?} declares {v} twice");
                assert!(
                    !v.is_empty() && v.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                    "{service:?} verb {v:?} is not a subject token"
                );
                assert_ne!(*v, crate::info::VERB, "info is every service's own verb");
            }
        }
    }

    #[test]
    fn the_empty_body_is_an_empty_object() {
        assert_eq!(serde_json::to_string(&super::Empty {}).unwrap(), "{}");
        let _: super::Empty = serde_json::from_str("{}").unwrap();
    }
}
