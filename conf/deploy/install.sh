# relist's own user; the store directory and the keys are its alone
useradd --system --home-dir /var/lib/relist --shell /usr/sbin/nologin relist
install -d -o relist -g relist -m 0700 /var/lib/relist
install -d -o root -g relist -m 0750 /etc/relist
install -d -o relist -g relist -m 0700 /etc/relist/keys
relist keys generate --domain lists.example.org --selector relist2026 --out /etc/relist/keys
chown relist:relist /etc/relist/keys/relist2026.lists.example.org.key
chmod 0600 /etc/relist/keys/relist2026.lists.example.org.key
# publish the printed TXT record, write /etc/relist/relist.toml (below), then:
install -o root -g relist -m 0640 relist.toml /etc/relist/relist.toml
sudo -u relist relist check-config -c /etc/relist/relist.toml
