#![allow(dead_code)]

pub mod local_etcd;
pub mod pki;
