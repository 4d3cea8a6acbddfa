//! Request and reply types of the supervisor.
