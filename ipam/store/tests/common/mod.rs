#![allow(dead_code)]

pub mod local_etcd;
pub mod opening;
pub mod pki;
