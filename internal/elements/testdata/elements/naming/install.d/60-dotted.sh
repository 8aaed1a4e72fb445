#!/bin/bash
echo dotted >> /root/naming.log
