mod cgroup_mkdir;
mod file_receive;
mod inode_permission;
mod unix_stream_connect;
