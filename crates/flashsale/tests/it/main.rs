//! One integration-test binary (it links once): a real server on port 0, real HTTP, real files.

mod architecture;
mod auth;
mod bad_input;
mod bench;
mod brokers;
mod chaos;
mod cluster;
mod conformance;
mod disk_full;
mod edge;
mod events;
mod harness;
mod journal_store;
mod live_sale;
mod localstripe;
mod openapi_statuses;
mod ops;
mod pages;
mod payments;
mod process;
mod property;
mod regressions;
mod scenarios;
mod services;
mod tls;
mod waiting_room;
