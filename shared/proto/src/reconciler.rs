//! Request and reply types of the reconciler.
