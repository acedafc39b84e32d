//! Password authentication and ACLs, seen from a real client (rumqttc, MQTT 5).

use std::time::Duration;

use node_a::{NodeA, NodeAConfig};
use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, EventLoop, MqttOptions};

async fn start(dir: &std::path::Path) -> NodeA {
    let passwd = dir.join("passwd");
    node_a::auth::PasswordFile::set_user(&passwd, "alice", "wonderland").unwrap();
    node_a::auth::PasswordFile::set_user(&passwd, "bob", "builder").unwrap();
    let acl = dir.join("acl");
    std::fs::write(
        &acl,
        "allow user alice all #\nallow all all devices/%u/#\ndeny all all #\n",
    )
    .unwrap();
    node_a::run(NodeAConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        sys_interval_secs: 0,
        password_file: Some(passwd),
        acl_file: Some(acl),
        acl_default_allow: false,
        ..NodeAConfig::default()
    })
    .await
    .unwrap()
}

async fn connect(
    node: &NodeA,
    id: &str,
    creds: Option<(&str, &str)>,
) -> (AsyncClient, EventLoop, Result<(), ConnectReturnCode>) {
    let mut o = MqttOptions::new(id, "127.0.0.1", node.local_addr.port());
    if let Some((u, p)) = creds {
        o.set_credentials(u, p);
    }
    let (c, mut el) = AsyncClient::new(o, 100);
    let r = loop {
        match tokio::time::timeout(Duration::from_secs(10), el.poll())
            .await
            .expect("bounded")
        {
            Ok(Event::Incoming(Packet::ConnAck(a))) => {
                break Ok(()).and(if a.code == ConnectReturnCode::Success {
                    Ok(())
                } else {
                    Err(a.code)
                })
            }
            Ok(_) => {}
            Err(rumqttc::v5::ConnectionError::ConnectionRefused(code)) => break Err(code),
            Err(e) => panic!("{e}"),
        }
    };
    (c, el, r)
}

async fn next_packet(el: &mut EventLoop) -> Packet {
    loop {
        if let Event::Incoming(p) = tokio::time::timeout(Duration::from_secs(10), el.poll())
            .await
            .expect("bounded")
            .expect("connected")
        {
            return p;
        }
    }
}

#[tokio::test]
async fn passwords_are_checked_and_anonymous_refused() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    assert_eq!(
        connect(&node, "a", Some(("alice", "wonderland"))).await.2,
        Ok(())
    );
    assert_eq!(
        connect(&node, "b", Some(("alice", "wrong"))).await.2,
        Err(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        connect(&node, "c", Some(("mallory", "x"))).await.2,
        Err(ConnectReturnCode::BadUserNamePassword)
    );
    assert_eq!(
        connect(&node, "d", None).await.2,
        Err(ConnectReturnCode::NotAuthorized)
    );
    node.shutdown().await;
}

#[tokio::test]
async fn acl_denies_subscribe_and_publish_with_0x87() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let (bob, mut el, r) = connect(&node, "bob-1", Some(("bob", "builder"))).await;
    r.unwrap();
    bob.subscribe("devices/bob/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    bob.subscribe("devices/alice/#", QoS::AtLeastOnce)
        .await
        .unwrap();
    let mut codes = Vec::new();
    while codes.len() < 2 {
        if let Packet::SubAck(s) = next_packet(&mut el).await {
            codes.push(s.return_codes[0]);
        }
    }
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::NotAuthorized
        ]
    );
    bob.publish("other/topic", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    loop {
        if let Packet::PubAck(a) = next_packet(&mut el).await {
            assert_eq!(
                a.reason,
                rumqttc::v5::mqttbytes::v5::PubAckReason::NotAuthorized
            );
            break;
        }
    }
    // Allowed publish on its own subtree arrives.
    bob.publish("devices/bob/led", QoS::AtLeastOnce, false, "on")
        .await
        .unwrap();
    loop {
        if let Packet::Publish(p) = next_packet(&mut el).await {
            assert_eq!(&p.topic[..], b"devices/bob/led");
            break;
        }
    }
    node.shutdown().await;
}
