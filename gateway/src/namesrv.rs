//! The NameServer role: routes. The gateway presents the whole store as one
//! broker (`brokerName`) whose queues are the topic's global queue ids; a
//! client asks here which broker serves a topic and then talks to the broker
//! listener. Several gateways each answer with their own address, so clients
//! spread over them and move on route refresh.

use std::sync::Arc;

use ferrymq_shared::boundary::BoxFuture;
use serde_json::json;

use crate::codes::{request, response};
use crate::remoting::Command;
use crate::server::{not_supported, Conn, Handler};
use crate::state::Shared;

/// The topic a producer asks about when its topic does not exist yet: its
/// route tells the client where auto-creation may happen.
pub const AUTO_CREATE_TOPIC_KEY: &str = "TBW102";

/// Serves the NameServer port.
pub struct NameServer {
    /// Gateway state.
    pub shared: Arc<Shared>,
}

impl Handler for NameServer {
    fn handle(self: Arc<Self>, _conn: Arc<Conn>, req: Command) -> BoxFuture<Option<Command>> {
        Box::pin(async move { Some(self.answer(&req)) })
    }
}

impl NameServer {
    fn answer(&self, req: &Command) -> Command {
        let s = &self.shared;
        match req.code {
            request::GET_ROUTEINFO_BY_TOPIC => {
                let topic = req.field("topic").unwrap_or_default();
                match s.route(topic) {
                    Some(body) => {
                        let mut r = Command::response_to(req, response::SUCCESS, None);
                        r.body = body.into();
                        r
                    }
                    None => Command::response_to(
                        req,
                        response::TOPIC_NOT_EXIST,
                        Some(format!(
                            "No topic route info in name server for the topic: {topic}"
                        )),
                    ),
                }
            }
            request::GET_BROKER_CLUSTER_INFO => {
                let mut r = Command::response_to(req, response::SUCCESS, None);
                let name = &s.config.broker_name;
                let body = json!({
                    "brokerAddrTable": {
                        name: {
                            "cluster": s.config.broker_cluster_name,
                            "brokerName": name,
                            "brokerAddrs": {"0": s.broker_addr.to_string()},
                            "enableActingMaster": false,
                        }
                    },
                    "clusterAddrTable": { s.config.broker_cluster_name.clone(): [name] },
                });
                r.body = body.to_string().into();
                r
            }
            request::GET_ALL_TOPIC_LIST_FROM_NAMESERVER => {
                let mut r = Command::response_to(req, response::SUCCESS, None);
                let topics: Vec<String> =
                    s.l.topics()
                        .all()
                        .into_iter()
                        .map(|t| t.topic_name)
                        .collect();
                r.body = json!({ "topicList": topics }).to_string().into();
                r
            }
            // No ORDER_TOPIC_CONFIG or other KV entries: what a fresh NameServer says.
            request::GET_KV_CONFIG => Command::response_to(
                req,
                response::QUERY_NOT_FOUND,
                Some(format!(
                    "No config item, Namespace: {} Key: {}",
                    req.field("namespace").unwrap_or_default(),
                    req.field("key").unwrap_or_default()
                )),
            ),
            request::GET_KVLIST_BY_NAMESPACE => Command::response_to(
                req,
                response::QUERY_NOT_FOUND,
                Some("No config item".into()),
            ),
            request::DELETE_TOPIC_IN_NAMESRV => Command::response_to(req, response::SUCCESS, None),
            _ => not_supported(req),
        }
    }
}
